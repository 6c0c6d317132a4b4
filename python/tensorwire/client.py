"""The blocking client."""
from __future__ import annotations

import json
import select
import socket
import sys
import time
from typing import Any, List, Optional, Sequence, Tuple, Union

from . import errors
from ._core import (
    Assembly, Description, Faults, InferResult, PipelineRef, RawBody, Session, Timings, retryable,
)
from ._fragment import Datagrams, header_only
from ._send import Plan, Sender, batch_size, pace_delay
from ._wire import Kind, TokenInfo, hello_datagram, parse_packet

Answer = Union[RawBody, errors.TensorwireError, TokenInfo, None]
DEFAULT_PORT = 7878


def open_socket(host: str, port: int, rcvbuf: int, blocking: bool) -> Tuple[socket.socket, Any]:
    """A UDP socket connected to the proxy (replies come from that address;
    the kernel filters everything else), with a large receive buffer for
    bursts of reply fragments."""
    family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    # SO_RCVBUFFORCE (Linux, privileged) first, else SO_RCVBUF (capped by the system).
    for opt in ((33, socket.SO_RCVBUF) if sys.platform.startswith("linux") else (socket.SO_RCVBUF,)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, rcvbuf)
            break
        except OSError:
            continue
    sock.connect(addr)
    sock.setblocking(blocking)
    return sock, addr


class Client:
    """A TWP/1 client for one proxy, on one UDP socket.

    >>> tw = tensorwire.Client("127.0.0.1", 7878, timeout=2.0, retries=1)
    >>> r = tw.infer_image(img, pipeline="resnet50")
    >>> r.outputs["input"].shape
    (1, 3, 224, 224)

    ``timeout``: seconds to wait for a whole answer after each attempt's
    last datagram. ``retries``: how many times a request that got no answer
    or INCOMPLETE is resent whole under a new request id. ``max_rate``:
    datagrams per second (None: as fast as the kernel takes them).
    ``psk``: pre-shared key; the HELLO carrying the token also carries
    HMAC-SHA256(psk, token). ``max_datagram`` lowers DESCRIBE's value.
    ``faults`` injects loss, duplication and reordering (tests).
    The address validation handshake (HELLO/TOKEN) runs by itself when
    DESCRIBE says ``address_validation`` or the proxy answers RETRY.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, timeout: float = 2.0,
                 retries: int = 1, max_rate: Optional[float] = None, psk: Optional[bytes] = None,
                 max_datagram: Optional[int] = None, faults: Optional[Faults] = None,
                 rcvbuf: int = 32 << 20, use_sendmmsg: bool = True):
        self._s = Session(timeout, retries, max_rate, psk, max_datagram, faults)
        self.sock, self.address = open_socket(host, port, rcvbuf, blocking=False)
        self._sender = Sender(self.sock, use_sendmmsg)
        self._buf = bytearray(65536)
        self._handshakes = 0

    # ---------------------------------------------------------- public API

    @property
    def session(self) -> Session:
        return self._s

    @property
    def validated(self) -> bool:
        """Whether the proxy has validated this client's address (as far as
        the client knows)."""
        return self._s.is_validated(self.address)

    @property
    def handshakes(self) -> int:
        """How many address validations this client completed."""
        return self._handshakes

    def describe(self, refresh: bool = False) -> Description:
        """The proxy's pipelines and limits (cached; ``refresh`` asks again)."""
        if self._s.description is None or refresh:
            raw, _, _ = self._exchange(header_only(Kind.DESCRIBE), validate=False, faults=None)
            self._s.description = Description.from_json(json.loads(raw.body))
        return self._s.description

    def infer_image(self, img: Any, pipeline: PipelineRef, *, pixel_format: Any = None,
                    tiles: bool = False) -> InferResult:
        """Sends an image (uint8 (H, W), (H, W, 3) or (H, W, 4) array, or a PIL
        image) to an image pipeline, as rows or as tiles with their halos."""
        self.describe()
        t0 = time.perf_counter()
        dg, pipe = self._s.prepare_image(img, pipeline, pixel_format, tiles)
        return self._infer(dg, pipe, time.perf_counter() - t0)

    def infer_text(self, text: Union[str, bytes], pipeline: PipelineRef, *,
                   overlap: int = 64) -> InferResult:
        """Sends a text (str, or UTF-8 bytes as they are) to a text pipeline in
        chunks that repeat the last ``overlap`` bytes of the previous one."""
        self.describe()
        t0 = time.perf_counter()
        dg, pipe = self._s.prepare_text(text, pipeline, overlap)
        return self._infer(dg, pipe, time.perf_counter() - t0)

    def request(self, datagrams: Sequence[bytes]) -> InferResult:
        """Sends datagrams built by the caller, as they are (no retries), and
        waits for the answer to the first one's request_id."""
        if not datagrams:
            raise ValueError("no datagrams")
        self.describe()
        dg = Datagrams.from_bytes(datagrams)
        raw, rid, t = self._exchange(dg, faults=None, fixed_id=int.from_bytes(datagrams[0][8:16], "big"))
        pid = dg.pipeline
        return Session.result(raw, self.describe().pipelines.get(pid), rid, pid, t)

    def handshake(self) -> None:
        """Validates this client's address now (HELLO/TOKEN)."""
        self._handshake(force=True)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------- internals

    def _infer(self, dg: Datagrams, pipe: Any, prepare_s: float) -> InferResult:
        raw, rid, t = self._exchange(dg, faults=self._s.faults)
        t.prepare_s = prepare_s
        t.total_s += prepare_s
        return Session.result(raw, pipe, rid, dg.pipeline, t)

    def _exchange(self, dg: Datagrams, faults: Optional[Faults], validate: bool = True,
                  fixed_id: Optional[int] = None) -> Tuple[RawBody, int, Timings]:
        t = Timings()
        start = time.perf_counter()
        if validate and self._s.needs_handshake(self.address):
            self._handshake()
        resent = False
        while True:
            rid = fixed_id if fixed_id is not None else self._s.next_id()
            dg.request_id = rid
            order = faults.order(len(dg), t.attempts) if faults else None
            t0 = time.perf_counter()
            plan = self._sender.plan(dg, order)
            self._send(plan)
            t1 = time.perf_counter()
            t.attempts += 1
            t.send_s += t1 - t0
            t.datagrams_sent += plan.n
            t.bytes_sent += plan.nbytes
            ans, n = self._await(rid)
            t.reply_datagrams += n
            t.wait_s += time.perf_counter() - t1
            if isinstance(ans, RawBody):
                t.total_s = time.perf_counter() - start
                return ans, rid, t
            if fixed_id is None:
                if isinstance(ans, errors.Retry) and not resent:
                    resent = True
                    self._handshake(force=True)
                    continue
                if retryable(ans) and t.attempts <= self._s.retries + int(resent):
                    continue
            if ans is None or isinstance(ans, TokenInfo):
                raise errors.Timeout(f"no answer within {self._s.timeout} s "
                                     f"({t.attempts} attempt(s))", request_id=rid)
            raise ans

    def _send(self, plan: Plan) -> None:
        sent, t0 = 0, time.perf_counter()
        batch = batch_size(self._s.max_rate)
        while sent < plan.n:
            delay = pace_delay(t0, sent, self._s.max_rate, time.perf_counter())
            if delay > 0:
                time.sleep(delay)
            k = self._sender.transmit(plan, sent, min(plan.n, sent + batch))
            if k == 0:
                select.select([], [self.sock], [], 0.05)
            sent += k
        self._s.touch(self.address)

    def _await(self, rid: int) -> Tuple[Answer, int]:
        """The answer to ``rid`` (None: none within the timeout) and how many
        of its datagrams arrived."""
        deadline = time.monotonic() + self._s.timeout
        asm = Assembly()
        mv = memoryview(self._buf)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None, asm.received
                self.sock.settimeout(left)
                try:
                    n = self.sock.recv_into(self._buf)
                except socket.timeout:
                    return None, asm.received
                except ConnectionRefusedError:  # ICMP: nobody at the proxy's port (yet)
                    time.sleep(min(0.01, max(0.0, left)))
                    continue
                p = parse_packet(mv[:n])
                if p is None or p.request_id != rid:
                    self._s.ignored += 1
                    continue
                r = asm.feed(p)
                if r is not None:
                    return r, asm.received
        finally:
            self.sock.setblocking(False)

    def _handshake(self, force: bool = False) -> None:
        """HELLO without token (padded to 1200 bytes) -> TOKEN -> HELLO with
        the token (+ HMAC under the PSK) -> TOKEN validated=1."""
        if not force and self._s.is_validated(self.address):
            return
        token, rejected = b"", 0
        for _ in range(3 + 2 * self._s.retries):
            rid = self._s.next_id()
            self._sender.sock.send(hello_datagram(rid, token, self._s.psk))
            ans, _ = self._await(rid)
            if ans is None:
                continue
            step = self._s.on_token(self.address, ans, token, rejected, rid)
            if step is None:
                self._handshakes += 1
                return
            token, rejected = step
        raise errors.Timeout("address validation: no TOKEN answer to HELLO")


__all__: List[str] = ["Client", "open_socket", "DEFAULT_PORT"]
