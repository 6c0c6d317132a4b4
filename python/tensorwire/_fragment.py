"""Cutting requests into TWP/1 datagrams: image rows, image tiles with their
halos, overlapping text chunks (pure; no I/O).

A request is held as a :class:`Datagrams`: one array of fixed-size headers
(numpy structured, filled in vectorized assignments) and one contiguous
payload buffer with an offset and a length per datagram. IMAGE_ROWS
payloads are slices of the caller's image itself (no copy); tiles are
gathered into one buffer. The sender hands header and payload to the kernel
as two iovecs per datagram.

Mirrors the Rust client (src/client/fragment.rs): whole rows per datagram
or row segments, tile grids with the fewest tiles whose halo'd input fits a
datagram (``ResizePlan::halo_rect``), and text chunks repeating the last
``overlap`` bytes of the previous one.
"""
from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ._wire import (
    COMMON_DTYPE, HEADER_LEN, IMAGE_DTYPE, IMAGE_HEADER_LEN, TEXT_DTYPE, TEXT_HEADER_LEN,
    Kind, PixelFormat, headers,
)

Rect = Tuple[int, int, int, int]  # x, y, w, h


class Datagrams:
    """``n`` datagrams: ``head[i]`` followed by ``data[off[i]:off[i]+size[i]]``.

    ``fields`` is the structured view of the headers (None for raw
    datagrams), through which the request id is set for each attempt.
    """

    def __init__(self, fields: Optional[np.ndarray], data: np.ndarray, off: np.ndarray,
                 size: np.ndarray, head: Optional[np.ndarray] = None):
        self.fields = fields
        if head is None:
            assert fields is not None
            head = fields.view(np.uint8).reshape(len(fields), fields.dtype.itemsize)
        self.head = head
        self.data = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
        self.off = np.asarray(off, dtype=np.int64)
        self.size = np.asarray(size, dtype=np.int64)

    @classmethod
    def from_bytes(cls, datagrams: Sequence[bytes]) -> "Datagrams":
        """Datagrams given whole (raw sends, tests)."""
        size = np.array([len(d) for d in datagrams], dtype=np.int64)
        off = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
        data = np.frombuffer(b"".join(datagrams), dtype=np.uint8)
        return cls(None, data, off, size, head=np.zeros((len(datagrams), 0), np.uint8))

    def __len__(self) -> int:
        return len(self.size)

    def __getitem__(self, i: int) -> bytes:
        o, s = int(self.off[i]), int(self.size[i])
        return self.head[i].tobytes() + self.data[o:o + s].tobytes()

    def to_list(self) -> List[bytes]:
        return [self[i] for i in range(len(self))]

    @property
    def pipeline(self) -> int:
        """The pipeline id in the headers (raw datagrams: the first one's)."""
        if self.fields is not None:
            return int(self.fields["pipeline"][0])
        return int.from_bytes(self[0][6:8], "big")

    @property
    def request_id(self) -> int:
        assert self.fields is not None
        return int(self.fields["request_id"][0])

    @request_id.setter
    def request_id(self, rid: int) -> None:
        if self.fields is not None:
            self.fields["request_id"] = rid

    def max_len(self) -> int:
        return int(self.head.shape[1] + self.size.max()) if len(self) else 0

    def nbytes(self) -> int:
        return int(self.head.size + self.size.sum())


# ---------------------------------------------------------------- images

def image_rows(img: np.ndarray, fmt: PixelFormat, pipeline: int, request_id: int,
               max_datagram: int) -> Datagrams:
    """IMAGE_ROWS: whole rows per datagram, or (when a row is larger than a
    datagram) each row in equal segments; top to bottom. ``img`` is a
    C-contiguous uint8 array (H, W, C)."""
    h_img, w_img = img.shape[:2]
    ch = fmt.channels
    room = (max_datagram - HEADER_LEN - IMAGE_HEADER_LEN) // ch
    if room < 1:
        raise ValueError(f"max_datagram {max_datagram} too small for one pixel")
    if room >= w_img:
        k = room // w_img
        y = np.arange(0, h_img, k, dtype=np.int64)
        h = np.minimum(k, h_img - y)
        x = np.zeros_like(y)
        w = np.full_like(y, w_img)
    else:
        nseg = -(-w_img // room)
        bounds = np.arange(nseg + 1, dtype=np.int64) * w_img // nseg
        y = np.repeat(np.arange(h_img, dtype=np.int64), nseg)
        x = np.tile(bounds[:-1], h_img)
        w = np.tile(np.diff(bounds), h_img)
        h = np.ones_like(y)
    f = headers(IMAGE_DTYPE, Kind.IMAGE_ROWS, pipeline, request_id, len(y))
    _image_fields(f, w_img, h_img, fmt, x, y, w, h)
    return Datagrams(f, img.reshape(-1), (y * w_img + x) * ch, w * h * ch)


def _image_fields(f: np.ndarray, width: int, height: int, fmt: PixelFormat, x, y, w, h) -> None:
    f["width"], f["height"], f["pixel_format"] = width, height, int(fmt)
    f["x"], f["y"], f["w"], f["h"] = x, y, w, h


def axis_windows(antialias: bool, in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Input window ``[lo[o], hi[o])`` of every output index ``o`` on one
    axis (spec "Resampling"; zero-weight taps included)."""
    o = np.arange(out_size, dtype=np.float64)
    if antialias:
        scale = in_size / out_size
        support = max(scale, 1.0)
        center = (o + 0.5) * scale
        lo = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
        hi = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64)
    else:
        # OpenCV: src computed in float32 from a float64 scale 1 / (out / in).
        scale = 1.0 / (out_size / in_size)
        fx = ((o + 0.5) * scale - 0.5).astype(np.float32)
        last = in_size - 1
        lo = np.minimum(np.maximum(np.floor(fx).astype(np.int64), 0), last)
        hi = np.minimum(lo + 1, last) + 1
    return lo, hi


def halo_rect(antialias: bool, in_w: int, in_h: int, out_w: int, out_h: int, out: Rect) -> Rect:
    """The smallest input rectangle holding the windows of every pixel of the
    output rectangle ``out`` (a tile's input rectangle)."""
    lx, hx = axis_windows(antialias, in_w, out_w)
    ly, hy = axis_windows(antialias, in_h, out_h)
    ox, oy, ow, oh = out
    x0, x1, y0, y1 = lx[ox], hx[ox + ow - 1], ly[oy], hy[oy + oh - 1]
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


def _max_span(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """For n = 1..out: the widest input span among n equal output parts."""
    out = len(lo)
    res = np.zeros(out + 1, dtype=np.int64)
    for n in range(1, out + 1):
        b = np.arange(n + 1, dtype=np.int64) * out // n
        res[n] = (hi[b[1:] - 1] - lo[b[:-1]]).max()
    return res


@functools.lru_cache(maxsize=64)
def tile_grid(in_w: int, in_h: int, channels: int, out_w: int, out_h: int, antialias: bool,
              max_datagram: int) -> np.ndarray:
    """The grid of tiles with the fewest tiles whose halo'd input fits one
    datagram, row-major, as a read-only int64 array of rows
    ``[x, y, w, h, out_x, out_y, out_w, out_h]`` (input rectangle, output
    rectangle). Same choice as the Rust client's ``tile_grid``; cached (a
    video's frames share one grid)."""
    room = (max_datagram - HEADER_LEN - IMAGE_HEADER_LEN) // channels
    lx, hx = axis_windows(antialias, in_w, out_w)
    ly, hy = axis_windows(antialias, in_h, out_h)
    mw, mh = _max_span(lx, hx), _max_span(ly, hy)
    best: Optional[Tuple[int, int]] = None
    for nx in range(1, out_w + 1):
        if best and nx >= best[0] * best[1]:
            break
        fits = np.nonzero(mw[nx] * mh[1:] <= room)[0]
        if len(fits):
            ny = int(fits[0]) + 1
            if not best or nx * ny < best[0] * best[1]:
                best = (nx, ny)
    if best is None:
        raise ValueError(f"no tiling of {in_w}x{in_h} -> {out_w}x{out_h} fits a "
                         f"{max_datagram}-byte datagram (one output pixel's window is too large)")
    nx, ny = best
    bx = np.arange(nx + 1, dtype=np.int64) * out_w // nx
    by = np.arange(ny + 1, dtype=np.int64) * out_h // ny
    x0, x1 = lx[bx[:-1]], hx[bx[1:] - 1]
    y0, y1 = ly[by[:-1]], hy[by[1:] - 1]
    t = np.stack([np.tile(x0, ny), np.repeat(y0, nx), np.tile(x1 - x0, ny), np.repeat(y1 - y0, nx),
                  np.tile(bx[:-1], ny), np.repeat(by[:-1], nx), np.tile(np.diff(bx), ny),
                  np.repeat(np.diff(by), nx)], axis=1)
    t.flags.writeable = False
    return t


def image_tiles(img: np.ndarray, fmt: PixelFormat, pipeline: int, request_id: int,
                tiles: Union[np.ndarray, Sequence[Tuple[Rect, Rect]]]) -> Datagrams:
    """IMAGE_TILE datagrams for tiles (rows of :func:`tile_grid`, or
    ``(input rect, output rect)`` pairs); input rects carry the halos."""
    h_img, w_img = img.shape[:2]
    ch = fmt.channels
    t = np.asarray(tiles, dtype=np.int64).reshape(-1, 8)
    x, y, w, h = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
    f = headers(IMAGE_DTYPE, Kind.IMAGE_TILE, pipeline, request_id, len(t))
    _image_fields(f, w_img, h_img, fmt, x, y, w, h)
    f["out_x"], f["out_y"], f["out_w"], f["out_h"] = t[:, 4], t[:, 5], t[:, 6], t[:, 7]
    size = w * h * ch
    off = np.zeros(len(t), dtype=np.int64)
    data = np.empty(int(size.sum()), dtype=np.uint8)
    flat = np.ascontiguousarray(img).reshape(-1)
    # Tiles of one grid row share their input rows, and only a few widths
    # occur: gather each (rows, width) group with one fancy index.
    groups: dict = {}
    for k, key in enumerate(zip(y.tolist(), h.tolist(), w.tolist())):
        groups.setdefault(key, []).append(k)
    base = 0
    for (ty, th, tw), ks in groups.items():
        idx = np.array(ks, dtype=np.int64)
        n, s = len(idx), th * tw * ch
        # Each tile row is one run of tw*ch bytes: view the image as such
        # runs, indexed by (left column, row), and gather the group's tiles
        # straight into the payload buffer (one memcpy per tile row).
        run = np.dtype((np.void, tw * ch))
        windows: np.ndarray = np.ndarray((w_img - tw + 1, th), dtype=run, buffer=flat,
                             offset=ty * w_img * ch, strides=(ch, w_img * ch))
        data[base:base + n * s].view(run).reshape(n, th)[...] = windows[x[idx]]
        off[idx] = base + np.arange(n) * s
        base += n * s
    return Datagrams(f, data, off, size)


# ---------------------------------------------------------------- text

def text_spans(total: int, max_datagram: int, overlap: int) -> List[Tuple[int, int]]:
    """Byte spans [start, end) of the chunks: as large as a datagram allows,
    each repeating the last ``overlap`` bytes of the previous one."""
    room = max_datagram - HEADER_LEN - TEXT_HEADER_LEN
    if room < 1:
        raise ValueError(f"max_datagram {max_datagram} too small for text")
    overlap = max(0, min(overlap, room - 1))
    spans, start = [], 0
    while True:
        end = min(start + room, total)
        spans.append((start, end))
        if end == total:
            return spans
        start = end - overlap


def text_chunks(text: bytes, pipeline: int, request_id: int, max_datagram: int,
                overlap: int) -> Datagrams:
    """TEXT_CHUNK datagrams (a chunk may end inside a UTF-8 character)."""
    s = np.array(text_spans(len(text), max_datagram, overlap), dtype=np.int64).reshape(-1, 2)
    f = headers(TEXT_DTYPE, Kind.TEXT_CHUNK, pipeline, request_id, len(s))
    f["offset"] = s[:, 0]
    f["total_len"] = len(text)
    return Datagrams(f, np.frombuffer(text, dtype=np.uint8), s[:, 0], s[:, 1] - s[:, 0])


def header_only(kind: Kind) -> Datagrams:
    """A one-datagram request without body (DESCRIBE)."""
    f = headers(COMMON_DTYPE, kind, 0, 0, 1)
    return Datagrams(f, np.zeros(0, np.uint8), np.zeros(1, np.int64), np.zeros(1, np.int64))


__all__ = ["Datagrams", "image_rows", "image_tiles", "tile_grid", "halo_rect", "axis_windows",
           "text_chunks", "text_spans", "header_only"]
