"""What the blocking and the asyncio clients share: the DESCRIBE document as
types, request preparation, reply reassembly, results, the fault-injection
hook and the address-validation state. No I/O here."""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, List, Optional, Tuple, Union

import numpy as np

from . import errors
from ._fragment import Datagrams, image_rows, image_tiles, text_chunks, tile_grid
from ._kserve import DATATYPES, DecodeError, decode_outputs
from ._wire import (
    DEFAULT_MAX_DATAGRAM, ContentType, Kind, Packet, PixelFormat, TokenInfo, WireError, parse_error,
    parse_response, parse_token,
)

PipelineRef = Union[int, str]


# ------------------------------------------------------------ DESCRIBE

@dataclass(frozen=True)
class ImageSpec:
    width: int
    height: int
    antialias: bool
    pixel_formats: Tuple[str, ...]
    channels: int
    layout: str
    dtype: str
    mean: Tuple[float, ...] = ()
    std: Tuple[float, ...] = ()
    scale: Optional[float] = None
    zero_point: Optional[int] = None


@dataclass(frozen=True)
class TextSpec:
    tokenizer: str
    max_length: int
    truncation: bool
    padding: str
    outputs: Tuple[str, ...]
    dtype: str


@dataclass(frozen=True)
class Pipeline:
    id: int
    name: str
    kind: str  # "image" | "text"
    upstream: str  # "echo" | "kserve" | "openai"
    image: Optional[ImageSpec] = None
    text: Optional[TextSpec] = None


@dataclass(frozen=True)
class Limits:
    max_fragments: int
    max_image_pixels: int
    max_text_bytes: int
    max_requests_in_flight: int
    max_bytes_in_flight: int


@dataclass(frozen=True)
class Description:
    """The proxy's DESCRIBE document. ``pipelines`` by id; look one up by
    id or name with :meth:`pipeline`. ``raw`` is the whole JSON."""
    protocol: int
    max_datagram: int
    reassembly_timeout_ms: int
    request_deadline_ms: Optional[int]
    address_validation: bool
    limits: Limits
    pipelines: Dict[int, Pipeline]
    raw: Dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def by_name(self) -> Dict[str, Pipeline]:
        return {p.name: p for p in self.pipelines.values()}

    def pipeline(self, ref: PipelineRef) -> Pipeline:
        """The pipeline with that id or name (:class:`UnknownPipeline` if none)."""
        p = self.pipelines.get(ref) if isinstance(ref, int) else self.by_name.get(ref)
        if p is None:
            have = ", ".join(f"{p.id}:{p.name}" for p in self.pipelines.values())
            raise errors.UnknownPipeline(f"no pipeline {ref!r} on this proxy (it has {have})")
        return p

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Description":
        lim = d.get("limits", {})
        pipes: Dict[int, Pipeline] = {}
        for p in d.get("pipelines", []):
            img = txt = None
            if p.get("image"):
                i = p["image"]
                img = ImageSpec(i["width"], i["height"], bool(i.get("antialias", True)),
                                tuple(i.get("pixel_formats", [])), i.get("channels", 3),
                                i.get("layout", "NCHW"), i.get("dtype", "FP32"),
                                tuple(i.get("mean", ())), tuple(i.get("std", ())),
                                i.get("scale"), i.get("zero_point"))
            if p.get("text"):
                t = p["text"]
                txt = TextSpec(t.get("tokenizer", ""), t.get("max_length", 0),
                               bool(t.get("truncation", False)), t.get("padding", "none"),
                               tuple(t.get("outputs", ["input_ids"])), t.get("dtype", "INT64"))
            pipes[p["id"]] = Pipeline(p["id"], p["name"], p["kind"], p.get("upstream", ""), img, txt)
        return cls(
            protocol=d.get("protocol", 1),
            max_datagram=d.get("max_datagram", DEFAULT_MAX_DATAGRAM),
            reassembly_timeout_ms=d.get("reassembly_timeout_ms", 0),
            request_deadline_ms=d.get("request_deadline_ms"),
            address_validation=bool(d.get("address_validation", False)),
            limits=Limits(*(lim.get(k, 0) for k in Limits.__dataclass_fields__)),
            pipelines=pipes,
            raw=d,
        )


# ------------------------------------------------------------ results

@dataclass
class RawBody:
    """The answer's body as the proxy sent it."""
    content_type: int
    header_len: int
    body: bytes


@dataclass
class Timings:
    """Seconds: building datagrams, handing them to the kernel, waiting for
    the answer after the last send, and all of it (every attempt)."""
    prepare_s: float = 0.0
    send_s: float = 0.0
    wait_s: float = 0.0
    total_s: float = 0.0
    attempts: int = 0
    datagrams_sent: int = 0
    bytes_sent: int = 0
    reply_datagrams: int = 0


@dataclass
class InferResult:
    """``outputs`` maps the model's output names to arrays (dtypes and shapes
    as the answer declares them)."""
    outputs: Dict[str, np.ndarray]
    raw: RawBody
    timings: Timings
    request_id: int
    pipeline: int
    header: Dict[str, Any] = field(default_factory=dict, repr=False)

    def as_numpy(self, name: Optional[str] = None) -> np.ndarray:
        """One output: by name, or the first."""
        if name is None:
            return next(iter(self.outputs.values()))
        return self.outputs[name]

    @property
    def json(self) -> Any:
        """The body parsed as JSON (content_type 1, e.g. OpenAI answers)."""
        if self.raw.content_type != ContentType.JSON:
            raise ValueError(f"content_type {self.raw.content_type} is not JSON")
        return json.loads(self.raw.body)


def decode_body(raw: RawBody, pipe: Optional[Pipeline]) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """The output tensors of an answer (KServe v2 binary or JSON; raw tensor
    bytes shaped after the pipeline's DESCRIBE entry when it has one)."""
    ct = raw.content_type
    if ct == ContentType.KSERVE_BINARY:
        return decode_outputs(raw.body, raw.header_len)
    if ct == ContentType.JSON:
        try:
            head = json.loads(raw.body)
        except ValueError as e:
            raise DecodeError(f"JSON answer does not parse: {e}") from None
        if isinstance(head, dict) and isinstance(head.get("outputs"), list) and all(
                isinstance(o, dict) and "datatype" in o for o in head["outputs"]):
            return decode_outputs(raw.body, 0)
        return {}, head if isinstance(head, dict) else {"value": head}
    if ct == ContentType.RAW:
        arr = np.frombuffer(raw.body, np.uint8)
        if pipe is not None and pipe.image is not None:
            im = pipe.image
            dt = DATATYPES.get(im.dtype, DATATYPES["UINT8"])
            shape = ((1, im.channels, im.height, im.width) if im.layout == "NCHW"
                     else (1, im.height, im.width, im.channels))
            if arr.size == int(np.prod(shape)) * dt.itemsize:
                arr = arr.view(dt).reshape(shape)
        return {"raw": arr}, {}
    raise DecodeError(f"unknown content_type {ct}")


# ------------------------------------------------------------ reassembly

class Assembly:
    """Collects one request's answer: RESPONSE fragments placed at their
    offsets (duplicates ignored), or an ERROR."""

    def __init__(self) -> None:
        self.body: Optional[bytearray] = None
        self.meta: Optional[Tuple[int, int, int, int]] = None  # ct, total, header_len, count
        self.seen: set = set()
        self.received = 0

    def feed(self, p: Packet) -> Optional[Union[RawBody, TokenInfo, errors.TensorwireError]]:
        """Takes one datagram of this request; the final answer once complete
        (a TOKEN answers a HELLO)."""
        self.received += 1
        try:
            if p.kind == Kind.ERROR:
                info = parse_error(p)
                return errors.from_code(info.code, info.message, p.request_id, p.pipeline)
            if p.kind == Kind.TOKEN:
                return parse_token(p)
            if p.kind != Kind.RESPONSE:
                return None
            r = parse_response(p)
        except WireError as e:
            return errors.ProtocolError(str(e), request_id=p.request_id)
        meta = (r.content_type, r.total_len, r.header_len, p.count)
        if self.meta is None:
            self.meta, self.body = meta, bytearray(r.total_len)
        elif meta != self.meta:
            return errors.ProtocolError(f"reply fragments disagree: {meta} vs {self.meta}",
                                        request_id=p.request_id)
        if p.seq in self.seen:
            return None
        self.seen.add(p.seq)
        assert self.body is not None
        self.body[r.offset:r.offset + len(r.data)] = r.data
        if len(self.seen) == p.count:
            return RawBody(r.content_type, r.header_len, bytes(self.body))
        return None


# ------------------------------------------------------------ faults (test hook)

@dataclass
class Faults:
    """Faults injected on the client's own datagrams (a test hook: the
    network may do all of this). Applied to data requests on the first
    ``attempts`` attempts (None: all)."""
    drop: float = 0.0
    dup: float = 0.0
    reorder: bool = False
    seed: int = 0
    drop_seqs: Collection[int] = ()
    attempts: Optional[int] = None

    def order(self, n: int, attempt: int) -> Optional[np.ndarray]:
        """Indices of the datagrams to send, in send order (None: as they are)."""
        if self.attempts is not None and attempt >= self.attempts:
            return None
        rng = np.random.default_rng([self.seed, attempt])
        idx = np.arange(n, dtype=np.int64)
        keep = rng.random(n) >= self.drop
        if self.drop_seqs:
            keep &= ~np.isin(idx, np.fromiter(self.drop_seqs, np.int64))
        idx = idx[keep]
        dups = idx[rng.random(len(idx)) < self.dup]
        idx = np.concatenate([idx, dups])  # copies after the originals
        if self.reorder:
            idx = rng.permutation(idx)
        return idx


# ------------------------------------------------------------ images

def as_pixels(img: Any, pixel_format: Union[PixelFormat, str, None]) -> Tuple[np.ndarray, PixelFormat]:
    """A C-contiguous uint8 (H, W, C) array and its pixel format, from a numpy
    array (H, W), (H, W, 1|3|4) or a PIL image."""
    fmt = PixelFormat.parse(pixel_format) if pixel_format is not None else None
    if not isinstance(img, np.ndarray) and hasattr(img, "mode") and hasattr(img, "getbands"):
        mode = img.mode
        if mode not in ("L", "RGB", "RGBA"):
            has_alpha = "A" in img.getbands() or "transparency" in getattr(img, "info", {})
            mode = "RGBA" if has_alpha else "RGB"
            img = img.convert(mode)
        arr = np.asarray(img, dtype=np.uint8)
        natural = {"L": PixelFormat.GRAY8, "RGB": PixelFormat.RGB8, "RGBA": PixelFormat.RGBA8}[mode]
        if fmt in (PixelFormat.BGR8, PixelFormat.BGRA8) and natural.channels == fmt.channels:
            arr = arr[..., [2, 1, 0] + ([3] if fmt.channels == 4 else [])]
        elif fmt is not None and fmt != natural:
            raise ValueError(f"a PIL {mode} image cannot be sent as {fmt.name}")
        fmt = fmt or natural
    else:
        arr = np.asarray(img)
        if arr.dtype != np.uint8:
            raise TypeError(f"images must be uint8, not {arr.dtype}")
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise ValueError(f"image shape {arr.shape}: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
        c = arr.shape[2]
        if fmt is None:
            fmt = {1: PixelFormat.GRAY8, 3: PixelFormat.RGB8, 4: PixelFormat.RGBA8}[c]
        elif fmt.channels != c:
            raise ValueError(f"{fmt.name} has {fmt.channels} channels, the image has {c}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w = arr.shape[:2]
    if not (1 <= w <= 65535 and 1 <= h <= 65535):
        raise ValueError(f"image {w}x{h}: width and height must be 1..65535")
    return np.ascontiguousarray(arr), fmt


# ------------------------------------------------------------ shared state

class Session:
    """State of one client socket talking to one proxy: request ids, the
    cached DESCRIBE, address validation (per proxy address)."""

    def __init__(self, timeout: float, retries: int, max_rate: Optional[float],
                 psk: Optional[bytes], max_datagram: Optional[int], faults: Optional[Faults]):
        if retries < 0 or timeout <= 0:
            raise ValueError("timeout must be > 0 and retries >= 0")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.max_rate = max_rate
        self.psk = bytes(psk) if psk is not None else None
        self.max_datagram_override = max_datagram
        self.faults = faults
        self.description: Optional[Description] = None
        # Random start: a restarted client does not reuse keys the proxy remembers.
        self._next = secrets.randbits(63) | 1
        #: proxy address -> (validation lifetime s, time of our last datagram)
        self._validation: Dict[Any, Tuple[float, float]] = {}
        #: datagrams received that belonged to no request in flight (stale,
        #: duplicates of finished requests, strangers).
        self.ignored = 0

    def next_id(self) -> int:
        self._next = (self._next + 1) & 0xFFFF_FFFF_FFFF_FFFF
        return self._next

    @property
    def max_datagram(self) -> int:
        m = self.description.max_datagram if self.description else DEFAULT_MAX_DATAGRAM
        if self.max_datagram_override:
            m = min(m, self.max_datagram_override)
        return m

    def is_validated(self, addr: Any, now: Optional[float] = None) -> bool:
        v = self._validation.get(addr)
        now = time.monotonic() if now is None else now
        return v is not None and now < v[1] + v[0]

    def mark_validated(self, addr: Any, lifetime_s: float) -> None:
        self._validation[addr] = (float(lifetime_s), time.monotonic())

    def on_token(self, addr: Any, ans: Any, token: bytes, rejected: int, rid: int) -> Optional[Tuple[bytes, int]]:
        """One HELLO's answer during the handshake (shared by the sync and
        async clients): None once `addr` is validated, else the token for
        the next HELLO and the count of tokens the proxy refused."""
        if isinstance(ans, errors.TensorwireError):
            raise ans
        if not isinstance(ans, TokenInfo):
            raise errors.ProtocolError("HELLO answered with a RESPONSE", request_id=rid)
        if ans.validated:
            self.mark_validated(addr, ans.lifetime_s)
            return None
        if token:
            rejected += 1
            if rejected >= 2:
                raise errors.Retry("address validation failed: the proxy did not accept its token"
                                   + (" (wrong psk?)" if self.psk is not None else ""),
                                   request_id=rid)
        return ans.token, rejected

    def touch(self, addr: Any) -> None:
        v = self._validation.get(addr)
        if v is not None:
            self._validation[addr] = (v[0], time.monotonic())

    def needs_handshake(self, addr: Any) -> bool:
        d = self.description
        return d is not None and d.address_validation and not self.is_validated(addr)

    def prepare_image(self, img: Any, pipeline: PipelineRef, pixel_format: Any,
                      tiles: bool) -> Tuple[Datagrams, Optional[Pipeline]]:
        assert self.description is not None
        pipe = self._lookup(pipeline)
        pid = pipe.id if pipe else int(pipeline)
        arr, fmt = as_pixels(img, pixel_format)
        if not tiles:
            return image_rows(arr, fmt, pid, 0, self.max_datagram), pipe
        if pipe is None or pipe.image is None:
            raise errors.KindMismatch(f"tiles need an image pipeline; {pipeline!r} is not one on this proxy")
        im = pipe.image
        grid = tile_grid(arr.shape[1], arr.shape[0], fmt.channels, im.width, im.height,
                         im.antialias, self.max_datagram)
        return image_tiles(arr, fmt, pid, 0, grid), pipe

    def prepare_text(self, text: Union[str, bytes], pipeline: PipelineRef,
                     overlap: int) -> Tuple[Datagrams, Optional[Pipeline]]:
        pipe = self._lookup(pipeline)
        pid = pipe.id if pipe else int(pipeline)
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return text_chunks(data, pid, 0, self.max_datagram, overlap), pipe

    def _lookup(self, ref: PipelineRef) -> Optional[Pipeline]:
        """Names must exist; a numeric id the proxy does not list is sent as
        it is (the proxy answers UNKNOWN_PIPELINE)."""
        assert self.description is not None
        if isinstance(ref, str):
            return self.description.pipeline(ref)
        if not 0 <= int(ref) <= 0xFFFF:
            raise ValueError(f"pipeline id {ref} out of range")
        return self.description.pipelines.get(int(ref))

    @staticmethod
    def result(raw: RawBody, pipe: Optional[Pipeline], rid: int, pid: int,
               timings: Timings) -> InferResult:
        try:
            outputs, head = decode_body(raw, pipe)
        except (DecodeError, KeyError, TypeError) as e:
            raise errors.ProtocolError(f"cannot decode the answer: {e}", request_id=rid) from None
        return InferResult(outputs, raw, timings, rid, pid, head)


def retryable(e: Any) -> bool:
    """No answer, or INCOMPLETE: the spec's case for resending the whole
    request with a new request id."""
    return e is None or isinstance(e, errors.Incomplete)


__all__: List[str] = ["Description", "Pipeline", "ImageSpec", "TextSpec", "Limits", "InferResult",
                      "RawBody", "Timings", "Faults", "Assembly", "Session", "as_pixels"]
