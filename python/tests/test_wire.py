"""The packer and parsers against the protocol text: the worked examples
of docs/PROTOCOL.md section 12, the tile rules, KServe v2 decoding."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from tensorwire._core import Assembly, Description
from tensorwire._fragment import (
    axis_windows, halo_rect, image_rows, image_tiles, text_chunks, tile_grid,
)
from tensorwire._kserve import DecodeError, decode_outputs
from tensorwire._wire import PixelFormat, describe_datagram, parse_packet


def test_worked_examples_of_the_protocol_document():
    assert describe_datagram(0x0102030405060708) == bytes.fromhex(
        "5457 0104 0001 0000 0102030405060708 00000000 00000001")
    img = np.arange(0x04, 0x1C, dtype=np.uint8).reshape(2, 4, 3)
    d = image_rows(img, PixelFormat.RGB8, 1, 0x2A, 60)  # one row per datagram
    assert d[1] == bytes.fromhex(
        "5457010100010001000000000000002a0000000100000002000400020100000000010004000100000000000000000000"
    ) + bytes(range(0x10, 0x1C))
    assert d[0][4:6] == b"\x00\x00" and d[0][48:] == bytes(range(4, 16))


def _windows_bruteforce(antialias, n_in, n_out):
    """The spec's window formulas, one output index at a time, in plain Python."""
    out = []
    for o in range(n_out):
        if antialias:
            scale = n_in / n_out
            support = max(scale, 1.0)
            center = (o + 0.5) * scale
            out.append((max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)))
        else:
            src = float(np.float32((o + 0.5) * (1.0 / (n_out / n_in)) - 0.5))
            i0 = int(np.floor(src))
            i0 = min(max(i0, 0), n_in - 1)
            out.append((i0, min(i0 + 1, n_in - 1) + 1))
    return out


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("n_in,n_out", [(640, 224), (224, 640), (7, 3), (1000, 1), (1, 9), (481, 13)])
def test_axis_windows(antialias, n_in, n_out):
    lo, hi = axis_windows(antialias, n_in, n_out)
    assert list(zip(lo.tolist(), hi.tolist())) == _windows_bruteforce(antialias, n_in, n_out)


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("w,h,ch", [(640, 480, 3), (1280, 720, 4), (50, 30, 1), (224, 224, 3)])
def test_tiles_partition_the_output_and_carry_their_halos(antialias, w, h, ch):
    grid = tile_grid(w, h, ch, 224, 224, antialias, 1472)
    cover = np.zeros((224, 224), np.int32)
    win_x, win_y = _windows_bruteforce(antialias, w, 224), _windows_bruteforce(antialias, h, 224)
    for x, y, iw, ih, ox, oy, ow, oh in grid.tolist():
        cover[oy:oy + oh, ox:ox + ow] += 1
        assert 48 + iw * ih * ch <= 1472
        assert (x, y, iw, ih) == halo_rect(antialias, w, h, 224, 224, (ox, oy, ow, oh))
        wx, wy = win_x[ox:ox + ow], win_y[oy:oy + oh]
        assert x <= min(a for a, _ in wx) and max(b for _, b in wx) <= x + iw
        assert y <= min(a for a, _ in wy) and max(b for _, b in wy) <= y + ih
    assert (cover == 1).all()
    img = np.random.default_rng(0).integers(0, 256, (h, w, ch), dtype=np.uint8)
    dg = image_tiles(img, PixelFormat(0 if ch == 1 else 1 if ch == 3 else 3), 1, 5, grid)
    for i in (0, len(grid) // 2, len(grid) - 1):
        raw = dg[i]
        x, y, iw, ih = struct.unpack_from(">HHHH", raw, 30)
        assert raw[48:] == img[y:y + ih, x:x + iw].tobytes()
        assert struct.unpack_from(">HHHH", raw, 38) == tuple(grid[i][4:])


def test_rows_cover_every_pixel_once():
    for w, h, fmt in [(1920, 1080, PixelFormat.RGB8), (3, 1, PixelFormat.GRAY8), (1000, 2, PixelFormat.BGRA8)]:
        img = np.random.default_rng(1).integers(0, 256, (h, w, fmt.channels), dtype=np.uint8)
        dg = image_rows(img, fmt, 1, 9, 1472)
        seen = np.zeros((h, w), np.int32)
        for i in range(len(dg)):
            d = dg[i]
            assert len(d) <= 1472 and parse_packet(memoryview(d)).seq == i
            x, y, ww, hh = struct.unpack_from(">HHHH", d, 30)
            seen[y:y + hh, x:x + ww] += 1
            assert d[48:] == img[y:y + hh, x:x + ww].tobytes()
        assert (seen == 1).all() and dg[len(dg) - 1][5] == 1 and (len(dg) == 1 or dg[0][5] == 0)


def test_text_chunks_overlap_and_cover():
    text = bytes((i * 7) % 251 for i in range(5000))
    for overlap in (0, 64):
        dg = text_chunks(text, 2, 1, 1472, overlap)
        rebuilt, prev_end = bytearray(len(text)), 0
        for i in range(len(dg)):
            d = dg[i]
            off, total, res = struct.unpack_from(">III", d, 24)
            assert total == len(text) and res == 0 and len(d) <= 1472
            if off:
                assert prev_end - off == overlap
            rebuilt[off:off + len(d) - 36] = d[36:]
            prev_end = off + len(d) - 36
        assert bytes(rebuilt) == text
    empty = text_chunks(b"", 2, 1, 1472, 64)
    assert len(empty) == 1 and len(empty[0]) == 36


def _kserve_binary(tensors):
    head = {"model_name": "m", "outputs": []}
    blobs = []
    for name, dt, arr in tensors:
        b = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        head["outputs"].append({"name": name, "datatype": dt, "shape": list(arr.shape),
                                "parameters": {"binary_data_size": len(b)}})
        blobs.append(b)
    h = json.dumps(head).encode()
    return h + b"".join(blobs), len(h)


def test_kserve_binary_and_json_decoding():
    rng = np.random.default_rng(2)
    ts = [("a", "FP32", rng.standard_normal((1, 3, 4, 5)).astype(np.float32)),
          ("b", "INT64", rng.integers(-9, 9, (1, 7))), ("c", "FP16", rng.standard_normal((2, 2)).astype(np.float16)),
          ("d", "BOOL", rng.integers(0, 2, (3,)).astype(bool)), ("e", "UINT8", rng.integers(0, 255, (4,), dtype=np.uint8)),
          ("f", "FP64", rng.standard_normal((2,)))]
    body, hl = _kserve_binary(ts)
    out, head = decode_outputs(body, hl)
    assert list(out) == [t[0] for t in ts] and head["model_name"] == "m"
    for name, _, arr in ts:
        np.testing.assert_array_equal(out[name], arr)
        assert out[name].dtype.kind == arr.dtype.kind and out[name].shape == arr.shape
    js = {"outputs": [{"name": "x", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]},
                      {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["hi", "yo"]}]}
    out, _ = decode_outputs(json.dumps(js).encode(), 0)
    np.testing.assert_array_equal(out["x"], [[1, 2], [3, 4]])
    assert out["x"].dtype == np.int32 and list(out["s"]) == [b"hi", b"yo"]
    bytes_body = b"\x02\x00\x00\x00hi\x03\x00\x00\x00abc"
    h = json.dumps({"outputs": [{"name": "s", "datatype": "BYTES", "shape": [2],
                                 "parameters": {"binary_data_size": len(bytes_body)}}]}).encode()
    out, _ = decode_outputs(h + bytes_body, len(h))
    assert list(out["s"]) == [b"hi", b"abc"]
    with pytest.raises(DecodeError):
        decode_outputs(body[:-3], hl)


def _resp(rid, seq, count, total, off, chunk, ct=2, hl=0):
    return struct.pack(">HBBHHQII", 0x5457, 1, 0x81, 0, 1, rid, seq, count) + \
        struct.pack(">HHIII", 0, ct, total, off, hl) + chunk


def test_reply_assembly_by_offset_with_duplicates():
    body = bytes(range(200))
    frags = [_resp(5, i, 4, 200, i * 50, body[i * 50:(i + 1) * 50]) for i in range(4)]
    a = Assembly()
    out = None
    for f in [frags[3], frags[1], frags[1], frags[0], frags[3], frags[2]]:
        r = a.feed(parse_packet(memoryview(f)))
        out = out or r
    assert out.body == body and out.content_type == 2


def test_description_types():
    doc = {"protocol": 1, "max_datagram": 1400, "reassembly_timeout_ms": 250, "address_validation": True,
           "limits": {"max_fragments": 1, "max_image_pixels": 2, "max_text_bytes": 3,
                      "max_requests_in_flight": 4, "max_bytes_in_flight": 5},
           "pipelines": [{"id": 9, "name": "n", "kind": "image", "upstream": "echo",
                          "image": {"width": 2, "height": 3, "antialias": False, "pixel_formats": ["RGB8"],
                                    "channels": 3, "layout": "NHWC", "dtype": "INT8", "mean": [0, 0, 0],
                                    "std": [1, 1, 1], "scale": 0.5, "zero_point": -3}}]}
    d = Description.from_json(doc)
    assert d.pipeline("n") is d.pipeline(9) and d.pipeline(9).image.zero_point == -3
    assert d.limits.max_bytes_in_flight == 5 and d.address_validation and d.request_deadline_ms is None
