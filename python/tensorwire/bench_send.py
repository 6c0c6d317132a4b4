"""How fast one Python process puts TWP/1 datagrams on the wire.

    python -m tensorwire.bench_send [--seconds 2] [--method sendmmsg|sendmsg]

Sends to a local UDP sink (a bound socket nobody reads: the kernel delivers
to its queue, then drops) and prints datagrams/s and MB/s (UDP payload) for
(1) 1472-byte datagrams, (2) whole 1920x1080 RGB8 images cut into
IMAGE_ROWS datagrams, datagram building included, (3) the same image as
tiles for a 224x224 antialias pipeline, building included (the tile grid
is cached, as for a video's frames).

    python -m tensorwire.bench_send --proxy 127.0.0.1:7878 [--pipeline resnet50]

also sends 1920x1080 frames through a running proxy (rows, then tiles) and
prints frames/s and where the time goes (build, send, wait for the answer).
"""
from __future__ import annotations

import argparse
import socket
import time
from typing import Callable, Dict, Tuple

import numpy as np

from ._fragment import Datagrams, image_rows, image_tiles, tile_grid
from ._send import Sender
from ._wire import COMMON_DTYPE, Kind, PixelFormat, headers


def _sink() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def _run(seconds: float, once: Callable[[], Tuple[int, int]]) -> Dict[str, float]:
    """Calls ``once`` (returns datagrams and bytes sent) until ``seconds`` pass."""
    n = b = 0
    t0 = time.perf_counter()
    while True:
        dn, db = once()
        n += dn
        b += db
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return {"datagrams_per_s": n / dt, "MB_per_s": b / dt / 1e6, "datagrams": n, "seconds": dt}


def bench(seconds: float = 2.0, method: str = "sendmmsg") -> Dict[str, Dict[str, float]]:
    sink = _sink()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(sink.getsockname())
    sender = Sender(tx, use_sendmmsg=(method == "sendmmsg"))
    if method == "sendmmsg" and sender.sendmmsg is None:
        raise SystemExit("sendmmsg is not available here")
    out: Dict[str, Dict[str, float]] = {}

    def blast(dg: Datagrams) -> Callable[[], Tuple[int, int]]:
        plan = sender.plan(dg)

        def once() -> Tuple[int, int]:
            sent = 0
            while sent < plan.n:
                sent += sender.transmit(plan, sent, plan.n)
            return plan.n, plan.nbytes
        return once

    n = 4096
    f = headers(COMMON_DTYPE, Kind.IMAGE_ROWS, 1, 1, n)
    payload = np.random.default_rng(0).integers(0, 256, n * 1448, dtype=np.uint8)
    dg = Datagrams(f, payload, np.arange(n) * 1448, np.full(n, 1448))
    out["1472-byte datagrams"] = _run(seconds, blast(dg))

    img = np.random.default_rng(1).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)

    def rows_once() -> Tuple[int, int]:
        d = image_rows(img, PixelFormat.RGB8, 1, 7, 1472)
        p = sender.plan(d)
        sent = 0
        while sent < p.n:
            sent += sender.transmit(p, sent, p.n)
        return p.n, p.nbytes
    out["1920x1080 RGB8 rows (build+send)"] = _run(seconds, rows_once)

    grid = tile_grid(1920, 1080, 3, 224, 224, True, 1472)

    def tiles_once() -> Tuple[int, int]:
        d = image_tiles(img, PixelFormat.RGB8, 1, 7, grid)
        p = sender.plan(d)
        sent = 0
        while sent < p.n:
            sent += sender.transmit(p, sent, p.n)
        return p.n, p.nbytes
    out["1920x1080 RGB8 tiles->224 (build+send)"] = _run(seconds, tiles_once)
    tx.close()
    sink.close()
    return out


def bench_proxy(addr: str, pipeline: str, seconds: float, max_rate: float) -> None:
    from .client import Client
    host, port = addr.rsplit(":", 1)
    img = np.random.default_rng(1).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    with Client(host, int(port), timeout=5.0, retries=1, max_rate=max_rate or None) as tw:
        for tiles in (False, True):
            tw.infer_image(img, pipeline=pipeline, tiles=tiles)  # warm up (DESCRIBE, tile grid)
            n, t, tot = 0, time.perf_counter(), {"prepare_s": 0.0, "send_s": 0.0, "wait_s": 0.0}
            while time.perf_counter() - t < seconds:
                r = tw.infer_image(img, pipeline=pipeline, tiles=tiles)
                n += 1
                for k in tot:
                    tot[k] += getattr(r.timings, k)
            dt = time.perf_counter() - t
            print(f"proxy {addr} {pipeline} 1920x1080 {'tiles' if tiles else 'rows '}: {n / dt:6.1f} frames/s, "
                  f"{r.timings.datagrams_sent} datagrams/frame, reply {r.timings.reply_datagrams} datagrams; "
                  + ", ".join(f"{k[:-2]} {v / n * 1e3:.1f} ms" for k, v in tot.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--method", choices=["sendmmsg", "sendmsg"], default="sendmmsg")
    ap.add_argument("--proxy", help="host:port of a running proxy: also measure whole requests")
    ap.add_argument("--pipeline", default="resnet50")
    ap.add_argument("--max-rate", type=float, default=0, help="pacing for --proxy, datagrams/s")
    a = ap.parse_args()
    if a.proxy:
        bench_proxy(a.proxy, a.pipeline, a.seconds, a.max_rate)
        return
    for name, r in bench(a.seconds, a.method).items():
        print(f"{a.method:8s} {name:40s} {r['datagrams_per_s']:12,.0f} datagrams/s "
              f"{r['MB_per_s']:9,.1f} MB/s")


if __name__ == "__main__":
    main()
