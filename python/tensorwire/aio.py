"""The asyncio client: many requests in flight on one socket, replies
matched by request id."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Dict, List, Optional, Tuple, Union

from . import errors
from ._core import (
    Assembly, Description, Faults, InferResult, PipelineRef, RawBody, Session, Timings, retryable,
)
from ._fragment import Datagrams, header_only
from ._send import Plan, Sender, batch_size, pace_delay
from ._wire import Kind, TokenInfo, hello_datagram, parse_packet
from .client import DEFAULT_PORT, open_socket


class _Waiter:
    __slots__ = ("fut", "asm")

    def __init__(self, fut: "asyncio.Future[Any]"):
        self.fut = fut
        self.asm = Assembly()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: "AsyncClient"):
        self.client = client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors: the affected requests time out and are retried


class AsyncClient:
    """Like :class:`tensorwire.Client` (same arguments and methods, as
    coroutines) for many requests in flight at once:

    >>> async with tensorwire.AsyncClient("127.0.0.1") as tw:
    ...     results = await asyncio.gather(*(tw.infer_text(t, pipeline="minilm") for t in texts))

    One socket per client; every request (and every retry) gets a fresh
    request id; answers are matched by id, so duplicates and replies to
    requests already finished are ignored.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, timeout: float = 2.0,
                 retries: int = 1, max_rate: Optional[float] = None, psk: Optional[bytes] = None,
                 max_datagram: Optional[int] = None, faults: Optional[Faults] = None,
                 rcvbuf: int = 32 << 20, use_sendmmsg: bool = True):
        self._s = Session(timeout, retries, max_rate, psk, max_datagram, faults)
        self.sock, self.address = open_socket(host, port, rcvbuf, blocking=False)
        self._sender = Sender(self.sock, use_sendmmsg)
        self._pending: Dict[int, _Waiter] = {}
        self._transport: Optional[asyncio.DatagramTransport] = None
        self._describe_lock: Optional[asyncio.Lock] = None
        self._hs_lock: Optional[asyncio.Lock] = None
        self._hs_gen = 0

    # ---------------------------------------------------------- public API

    @property
    def session(self) -> Session:
        return self._s

    @property
    def validated(self) -> bool:
        return self._s.is_validated(self.address)

    @property
    def handshakes(self) -> int:
        """How many address validations this client completed."""
        return self._hs_gen

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def describe(self, refresh: bool = False) -> Description:
        await self._start()
        assert self._describe_lock is not None
        async with self._describe_lock:
            if self._s.description is None or refresh:
                raw, _, _ = await self._exchange(header_only(Kind.DESCRIBE), None, validate=False)
                self._s.description = Description.from_json(json.loads(raw.body))
        return self._s.description

    async def infer_image(self, img: Any, pipeline: PipelineRef, *, pixel_format: Any = None,
                          tiles: bool = False) -> InferResult:
        await self.describe()
        t0 = time.perf_counter()
        dg, pipe = self._s.prepare_image(img, pipeline, pixel_format, tiles)
        return await self._infer(dg, pipe, time.perf_counter() - t0)

    async def infer_text(self, text: Union[str, bytes], pipeline: PipelineRef, *,
                         overlap: int = 64) -> InferResult:
        await self.describe()
        t0 = time.perf_counter()
        dg, pipe = self._s.prepare_text(text, pipeline, overlap)
        return await self._infer(dg, pipe, time.perf_counter() - t0)

    async def handshake(self) -> None:
        await self._start()
        await self._handshake(self._hs_gen)

    async def close(self) -> None:
        for w in self._pending.values():
            if not w.fut.done():
                w.fut.cancel()
        self._pending.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        else:
            self.sock.close()

    async def __aenter__(self) -> "AsyncClient":
        await self._start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ---------------------------------------------------------- internals

    async def _start(self) -> None:
        if self._transport is None:
            loop = asyncio.get_running_loop()
            self._transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=self.sock)
            self._describe_lock, self._hs_lock = asyncio.Lock(), asyncio.Lock()

    def _on_datagram(self, data: bytes) -> None:
        p = parse_packet(memoryview(data))
        w = self._pending.get(p.request_id) if p is not None else None
        if p is None or w is None or w.fut.done():
            self._s.ignored += 1
            return
        r = w.asm.feed(p)
        if r is not None:
            w.fut.set_result(r)

    async def _infer(self, dg: Datagrams, pipe: Any, prepare_s: float) -> InferResult:
        raw, rid, t = await self._exchange(dg, self._s.faults)
        t.prepare_s = prepare_s
        t.total_s += prepare_s
        return Session.result(raw, pipe, rid, dg.pipeline, t)

    async def _exchange(self, dg: Datagrams, faults: Optional[Faults],
                        validate: bool = True) -> Tuple[RawBody, int, Timings]:
        t = Timings()
        start = time.perf_counter()
        if validate and self._s.needs_handshake(self.address):
            await self._handshake(self._hs_gen)
        resent = False
        while True:
            gen = self._hs_gen
            rid = self._s.next_id()
            dg.request_id = rid
            order = faults.order(len(dg), t.attempts) if faults else None
            waiter = _Waiter(asyncio.get_running_loop().create_future())
            self._pending[rid] = waiter
            try:
                t0 = time.perf_counter()
                plan = self._sender.plan(dg, order)  # request_id is baked into the headers now
                await self._send(plan)
                t1 = time.perf_counter()
                t.attempts += 1
                t.send_s += t1 - t0
                t.datagrams_sent += plan.n
                t.bytes_sent += plan.nbytes
                try:
                    ans = await asyncio.wait_for(waiter.fut, self._s.timeout)
                except asyncio.TimeoutError:
                    ans = None
                t.wait_s += time.perf_counter() - t1
                t.reply_datagrams += waiter.asm.received
            finally:
                del self._pending[rid]
            if isinstance(ans, RawBody):
                t.total_s = time.perf_counter() - start
                return ans, rid, t
            if isinstance(ans, errors.Retry) and not resent:
                resent = True
                await self._handshake(gen)
                continue
            if retryable(ans) and t.attempts <= self._s.retries + int(resent):
                continue
            if ans is None or isinstance(ans, TokenInfo):
                raise errors.Timeout(f"no answer within {self._s.timeout} s "
                                     f"({t.attempts} attempt(s))", request_id=rid)
            raise ans

    async def _send(self, plan: Plan) -> None:
        # The headers of ``plan`` are the datagram buffer itself: send it
        # before another request of the same Datagrams could change them.
        sent, t0 = 0, time.perf_counter()
        batch = batch_size(self._s.max_rate)
        while sent < plan.n:
            delay = pace_delay(t0, sent, self._s.max_rate, time.perf_counter())
            if delay > 0:
                await asyncio.sleep(delay)
            k = self._sender.transmit(plan, sent, min(plan.n, sent + batch))
            if k == 0:
                await asyncio.sleep(0.0005)  # socket buffer full
            sent += k
        self._s.touch(self.address)

    async def _handshake(self, seen_gen: int) -> None:
        """The HELLO/TOKEN round trips; concurrent callers share one run."""
        assert self._hs_lock is not None
        async with self._hs_lock:
            if self._hs_gen != seen_gen and self._s.is_validated(self.address):
                return  # someone validated while we waited
            token, rejected = b"", 0
            loop = asyncio.get_running_loop()
            for _ in range(3 + 2 * self._s.retries):
                rid = self._s.next_id()
                w = _Waiter(loop.create_future())
                self._pending[rid] = w
                try:
                    self.sock.send(hello_datagram(rid, token, self._s.psk))
                    try:
                        ans = await asyncio.wait_for(w.fut, self._s.timeout)
                    except asyncio.TimeoutError:
                        continue
                finally:
                    del self._pending[rid]
                step = self._s.on_token(self.address, ans, token, rejected, rid)
                if step is None:
                    self._hs_gen += 1
                    return
                token, rejected = step
            raise errors.Timeout("address validation: no TOKEN answer to HELLO")


__all__: List[str] = ["AsyncClient"]
