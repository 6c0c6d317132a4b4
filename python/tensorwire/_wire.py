"""TWP/1 (revision 3) byte layouts: packing requests, parsing answers.

Every integer on the wire is unsigned big-endian. Numpy structured dtypes
describe the fixed headers so that thousands of fragment headers are filled
in one vectorized assignment; :mod:`struct` parses the proxy's answers.
No I/O here.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from typing import NamedTuple, Optional

import numpy as np

MAGIC = 0x5457
VERSION = 1
HEADER_LEN = 24
IMAGE_HEADER_LEN = 24
TEXT_HEADER_LEN = 12
RESPONSE_HEADER_LEN = 16
ERROR_HEADER_LEN = 4
TOKEN_HEADER_LEN = 8
FLAG_LAST = 0x0001
#: A HELLO without a token must be at least this large (UDP payload).
HELLO_MIN_LEN = 1200
#: Every proxy accepts datagrams of this size (IPv4, MTU 1500).
DEFAULT_MAX_DATAGRAM = 1472
HMAC_LEN = 32


class Kind(enum.IntEnum):
    IMAGE_ROWS = 0x01
    IMAGE_TILE = 0x02
    TEXT_CHUNK = 0x03
    DESCRIBE = 0x04
    HELLO = 0x05
    RESPONSE = 0x81
    ERROR = 0x82
    TOKEN = 0x83


class PixelFormat(enum.IntEnum):
    GRAY8 = 0
    RGB8 = 1
    BGR8 = 2
    RGBA8 = 3
    BGRA8 = 4

    @property
    def channels(self) -> int:
        return (1, 3, 3, 4, 4)[self]

    @classmethod
    def parse(cls, v: "PixelFormat | str | int") -> "PixelFormat":
        if isinstance(v, str):
            try:
                return cls[v.upper()]
            except KeyError:
                raise ValueError(f"unknown pixel format {v!r}; one of {[f.name for f in cls]}") from None
        return cls(v)


class ContentType(enum.IntEnum):
    JSON = 1
    KSERVE_BINARY = 2
    RAW = 3


_COMMON = [
    ("magic", ">u2"), ("version", "u1"), ("kind", "u1"), ("flags", ">u2"),
    ("pipeline", ">u2"), ("request_id", ">u8"), ("seq", ">u4"), ("count", ">u4"),
]
#: Common header (24 bytes).
COMMON_DTYPE = np.dtype(_COMMON)
#: Common header + image header (48 bytes).
IMAGE_DTYPE = np.dtype(_COMMON + [
    ("width", ">u2"), ("height", ">u2"), ("pixel_format", "u1"), ("reserved0", "u1"),
    ("x", ">u2"), ("y", ">u2"), ("w", ">u2"), ("h", ">u2"),
    ("out_x", ">u2"), ("out_y", ">u2"), ("out_w", ">u2"), ("out_h", ">u2"),
    ("reserved1", ">u2"),
])
#: Common header + text header (36 bytes).
TEXT_DTYPE = np.dtype(_COMMON + [("offset", ">u4"), ("total_len", ">u4"), ("reserved", ">u4")])
assert COMMON_DTYPE.itemsize == HEADER_LEN
assert IMAGE_DTYPE.itemsize == HEADER_LEN + IMAGE_HEADER_LEN
assert TEXT_DTYPE.itemsize == HEADER_LEN + TEXT_HEADER_LEN

_HEADER = struct.Struct(">HBBHHQII")
_RESPONSE = struct.Struct(">HHIII")
_ERROR = struct.Struct(">HH")
_TOKEN = struct.Struct(">HBBI")


def headers(dtype: np.dtype, kind: Kind, pipeline: int, request_id: int, count: int) -> np.ndarray:
    """``count`` zeroed headers of ``dtype`` with the common fields set
    (seq 0..count-1, LAST on the highest seq)."""
    h = np.zeros(count, dtype=dtype)
    h["magic"] = MAGIC
    h["version"] = VERSION
    h["kind"] = int(kind)
    h["pipeline"] = pipeline
    h["request_id"] = request_id
    h["seq"] = np.arange(count, dtype=np.uint32)
    h["count"] = count
    if count:
        h["flags"][-1] = FLAG_LAST
    return h


def pack_header(kind: int, pipeline: int, request_id: int, seq: int = 0, count: int = 1,
                flags: Optional[int] = None, version: int = VERSION, magic: int = MAGIC) -> bytes:
    """One common header (the fields may be set to anything, for tests)."""
    if flags is None:
        flags = FLAG_LAST if seq == count - 1 else 0
    return _HEADER.pack(magic, version, kind, flags, pipeline, request_id, seq, count)


def describe_datagram(request_id: int) -> bytes:
    return pack_header(Kind.DESCRIBE, 0, request_id)


def hello_datagram(request_id: int, token: bytes = b"", psk: Optional[bytes] = None,
                   pad_to: int = HELLO_MIN_LEN) -> bytes:
    """HELLO: token_len, token, [HMAC-SHA256(psk, token) when a token and a
    PSK are given (tensorwire's extension)], zero padding up to ``pad_to``."""
    body = struct.pack(">H", len(token)) + token
    if token and psk is not None:
        body += hmac.new(psk, token, hashlib.sha256).digest()
    d = pack_header(Kind.HELLO, 0, request_id) + body
    return d + bytes(max(0, pad_to - len(d)))


class Packet:
    """A datagram from the proxy, common header parsed."""
    __slots__ = ("kind", "flags", "pipeline", "request_id", "seq", "count", "data")

    def __init__(self, kind: int, flags: int, pipeline: int, request_id: int, seq: int, count: int,
                 data: memoryview):
        self.kind, self.flags, self.pipeline = kind, flags, pipeline
        self.request_id, self.seq, self.count = request_id, seq, count
        self.data = data  # the whole datagram


class ResponseFragment(NamedTuple):
    status: int
    content_type: int
    total_len: int
    offset: int
    header_len: int
    data: memoryview


class ErrorInfo(NamedTuple):
    code: int
    message: str


class TokenInfo(NamedTuple):
    validated: bool
    lifetime_s: int
    token: bytes


class WireError(ValueError):
    """A datagram from the proxy that breaks the protocol."""


def parse_packet(d: memoryview) -> Optional[Packet]:
    """The common header, or None if this is not TWP/1 traffic."""
    if len(d) < HEADER_LEN:
        return None
    magic, version, kind, flags, pipeline, rid, seq, count = _HEADER.unpack_from(d)
    if magic != MAGIC or version != VERSION:
        return None
    return Packet(kind, flags, pipeline, rid, seq, count, d)


def parse_response(p: Packet) -> ResponseFragment:
    if len(p.data) < HEADER_LEN + RESPONSE_HEADER_LEN:
        raise WireError("RESPONSE shorter than its header")
    status, ct, total, off, hl = _RESPONSE.unpack_from(p.data, HEADER_LEN)
    chunk = p.data[HEADER_LEN + RESPONSE_HEADER_LEN:]
    if off + len(chunk) > total or hl > total or p.seq >= p.count:
        raise WireError(f"RESPONSE slice {off}+{len(chunk)} outside body of {total} bytes")
    return ResponseFragment(status, ct, total, off, hl, chunk)


def parse_error(p: Packet) -> ErrorInfo:
    if len(p.data) < HEADER_LEN + ERROR_HEADER_LEN:
        raise WireError("ERROR shorter than its header")
    code, _ = _ERROR.unpack_from(p.data, HEADER_LEN)
    msg = bytes(p.data[HEADER_LEN + ERROR_HEADER_LEN:]).decode("utf-8", "replace")
    return ErrorInfo(code, msg)


def parse_token(p: Packet) -> TokenInfo:
    if len(p.data) < HEADER_LEN + TOKEN_HEADER_LEN:
        raise WireError("TOKEN shorter than its header")
    tlen, validated, _, lifetime = _TOKEN.unpack_from(p.data, HEADER_LEN)
    token = bytes(p.data[HEADER_LEN + TOKEN_HEADER_LEN:HEADER_LEN + TOKEN_HEADER_LEN + tlen])
    if len(token) != tlen:
        raise WireError("TOKEN shorter than its token_len")
    return TokenInfo(bool(validated), lifetime, token)
