"""The sender: sendmmsg (ctypes) and the sendmsg fallback put the same
bytes on the wire, in the planned order; pacing holds the rate."""
from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from tensorwire._fragment import image_rows, image_tiles, text_chunks, tile_grid
from tensorwire._send import Sender, batch_size, pace_delay
from tensorwire._wire import PixelFormat


def pair():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    return rx, tx


@pytest.mark.parametrize("method", ["sendmmsg", "sendmsg"])
def test_bytes_on_the_wire_equal_the_datagrams(method):
    img = np.random.default_rng(0).integers(0, 256, (120, 700, 4), dtype=np.uint8)
    cases = [image_rows(img, PixelFormat.BGRA8, 3, 11, 1472),
             image_tiles(img, PixelFormat.BGRA8, 3, 12, tile_grid(700, 120, 4, 64, 48, True, 1472)),
             text_chunks("ü".encode() * 3000, 2, 13, 1472, 64)]
    rx, tx = pair()
    s = Sender(tx, use_sendmmsg=(method == "sendmmsg"))
    if method == "sendmmsg" and s.sendmmsg is None:
        pytest.skip("no sendmmsg on this platform")
    try:
        for dg in cases:
            order = np.random.default_rng(1).permutation(len(dg))
            plan = s.plan(dg, order)
            assert s.transmit(plan, 0, plan.n) == plan.n
            got = [rx.recv(65536) for _ in range(plan.n)]
            assert got == [dg[int(i)] for i in order]
            assert plan.nbytes == sum(map(len, got))
    finally:
        rx.close()
        tx.close()


def test_pacing_holds_the_rate():
    assert batch_size(None) == 1024 and batch_size(5000) == 5 and batch_size(10) == 1
    assert pace_delay(0.0, 100, 1000.0, 0.05) == pytest.approx(0.05)
    import tensorwire
    rx, tx = pair()
    port = rx.getsockname()[1]
    rx.close()  # nobody answers; we only time the sending
    with tensorwire.Client("127.0.0.1", port, max_rate=20000, timeout=0.05, retries=0) as tw:
        tw._s.description = tensorwire.Description.from_json({"pipelines": []})
        dg = text_chunks(b"z" * (1436 * 3000), 2, 1, 1472, 0)  # 3000 datagrams
        t0 = time.perf_counter()
        tw._send(tw._sender.plan(dg))
        dt = time.perf_counter() - t0
    tx.close()
    assert 3000 / 20000 * 0.95 <= dt < 1.0
