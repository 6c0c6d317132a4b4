"""Putting datagrams on the wire fast: ``sendmmsg(2)`` through ctypes with
iovec/mmsghdr arrays built by numpy (two iovecs per datagram: its header and
a view of its payload, so image rows are never copied), or, where
``sendmmsg`` is missing, a tight loop of ``socket.sendmsg`` over
memoryviews. Pacing (``max_rate`` datagrams/s) is done by the callers
(sync and asyncio loops) with :func:`batch_bounds`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
import sys
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

from ._fragment import Datagrams

#: Largest vlen Linux takes per sendmmsg call (UIO_MAXIOV).
MAX_BATCH = 1024
_MMSGHDR_WORDS = 8  # struct mmsghdr on LP64: 56-byte msghdr + msg_len + pad = 64 bytes


def _load_sendmmsg() -> Any:
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        f = libc.sendmmsg
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    f.restype = ctypes.c_int
    return f


_SENDMMSG = _load_sendmmsg()
_HAS_SENDMSG = hasattr(socket.socket, "sendmsg")


class Plan:
    """One request's datagrams in send order, ready for the kernel."""

    def __init__(self, dg: Datagrams, order: Optional[np.ndarray], mmsg: bool):
        self.dg = dg  # keeps the buffers the iovecs point into alive
        idx = np.arange(len(dg), dtype=np.int64) if order is None else np.asarray(order, np.int64)
        self.n = len(idx)
        self.nbytes = int(dg.head.shape[1] * self.n + dg.size[idx].sum()) if self.n else 0
        self.idx = idx
        self.iov: Optional[np.ndarray] = None
        if mmsg and self.n:
            hlen = dg.head.shape[1]
            iov = np.empty((self.n, 2, 2), dtype=np.uint64)
            iov[:, 0, 0] = dg.head.ctypes.data + idx * dg.head.strides[0]
            iov[:, 0, 1] = hlen
            iov[:, 1, 0] = dg.data.ctypes.data + dg.off[idx]
            iov[:, 1, 1] = dg.size[idx]
            msg = np.zeros((self.n, _MMSGHDR_WORDS), dtype=np.uint64)
            msg[:, 2] = iov.ctypes.data + np.arange(self.n, dtype=np.uint64) * 32
            msg[:, 3] = 2
            self.iov, self.msg = iov, msg

    def views(self, start: int, stop: int) -> Iterator[Tuple[memoryview, memoryview]]:
        dg = self.dg
        for i in self.idx[start:stop]:
            o = int(dg.off[i])
            yield dg.head[i].data, dg.data[o:o + int(dg.size[i])].data


class Sender:
    """Sends :class:`Plan` slices on a connected UDP socket."""

    def __init__(self, sock: socket.socket, use_sendmmsg: bool = True):
        self.sock = sock
        self.fd = sock.fileno()
        self.sendmmsg = _SENDMMSG if use_sendmmsg else None

    @property
    def method(self) -> str:
        return "sendmmsg" if self.sendmmsg else "sendmsg"

    def plan(self, dg: Datagrams, order: Optional[np.ndarray] = None) -> Plan:
        return Plan(dg, order, self.sendmmsg is not None)

    def transmit(self, plan: Plan, start: int, stop: int) -> int:
        """Sends datagrams ``start..stop`` of ``plan``; returns how many the
        kernel took (0 when the socket buffer is full: wait, call again)."""
        if self.sendmmsg is not None and plan.iov is not None:
            sent = start
            while sent < stop:
                vlen = min(stop - sent, MAX_BATCH)
                r = self.sendmmsg(self.fd, plan.msg.ctypes.data + sent * 64, vlen, 0)
                if r < 0:
                    e = ctypes.get_errno()
                    if e in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                        break
                    if e in (errno.ECONNREFUSED, errno.EINTR):
                        continue  # an earlier ICMP error, reported once: go on
                    raise OSError(e, f"sendmmsg: {errno.errorcode.get(e, e)}")
                sent += r
            return sent - start
        sent = 0
        send = self._send_one
        for head, payload in plan.views(start, stop):
            try:
                send(head, payload)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                send(head, payload)  # an earlier ICMP error, reported once
            sent += 1
        return sent

    def _send_one(self, head: memoryview, payload: memoryview) -> None:
        if _HAS_SENDMSG:
            self.sock.sendmsg([head, payload])
        else:  # Windows: no scatter-gather
            self.sock.send(bytes(head) + bytes(payload))


def batch_size(max_rate: Optional[float]) -> int:
    """Datagrams per kernel call: up to 1024, or about 1 ms worth when paced."""
    if not max_rate:
        return MAX_BATCH
    return int(max(1, min(MAX_BATCH, max_rate / 1000)))


def pace_delay(t0: float, sent: int, max_rate: Optional[float], now: float) -> float:
    """Seconds to wait before sending datagram number ``sent`` so that the
    average rate since ``t0`` stays at or below ``max_rate``."""
    if not max_rate:
        return 0.0
    return t0 + sent / max_rate - now


__all__: List[str] = ["Sender", "Plan", "batch_size", "pace_delay", "MAX_BATCH"]
