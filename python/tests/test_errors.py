"""Every ERROR code the proxy can be made to send arrives as its exception.
Datagrams that the client would never build are packed here with
``struct`` (independently of the client's packer) and sent with
``Client.request``."""
from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest
from conftest import free_port

import tensorwire
from tensorwire import errors

HDR = struct.Struct(">HBBHHQII")


def hdr(kind, pipeline, rid, seq=0, count=1, version=1, flags=None):
    flags = (1 if seq == count - 1 else 0) if flags is None else flags
    return HDR.pack(0x5457, version, kind, flags, pipeline, rid, seq, count)


def text_dg(pipeline, rid, seq, count, offset, total, chunk, reserved=0):
    return hdr(3, pipeline, rid, seq, count) + struct.pack(">III", offset, total, reserved) + chunk


@pytest.fixture(scope="module")
def tw(proxy):
    with tensorwire.Client("127.0.0.1", proxy.port, timeout=3.0, retries=0) as c:
        c.describe()
        yield c


def test_exception_classes_follow_the_codes():
    names = {1: "Malformed", 2: "UnsupportedVersion", 3: "UnknownPipeline", 4: "KindMismatch",
             5: "TooLarge", 6: "Incomplete", 7: "Overloaded", 8: "UpstreamUnavailable",
             9: "UpstreamError", 10: "InvalidContent", 11: "Retry"}
    for code, name in names.items():
        e = errors.from_code(code, "msg", request_id=5)
        assert type(e).__name__ == name and e.code == code and e.message == "msg"
        assert isinstance(e, tensorwire.TensorwireError) and getattr(tensorwire, name) is type(e)
    assert type(errors.from_code(99, "x")) is tensorwire.TensorwireError


def test_malformed_gap_in_text(tw):
    rid = 0x1001
    with pytest.raises(tensorwire.Malformed) as e:
        tw.request([text_dg(2, rid, 0, 2, 0, 15, b"hello"), text_dg(2, rid, 1, 2, 10, 15, b"world")])
    assert e.value.request_id == rid


def test_malformed_reserved_field(tw):
    with pytest.raises(tensorwire.Malformed):
        tw.request([text_dg(2, 0x1002, 0, 1, 0, 2, b"hi", reserved=1)])


def test_unsupported_version(tw):
    with pytest.raises(tensorwire.UnsupportedVersion):
        tw.request([hdr(3, 2, 0x1003, version=2) + struct.pack(">III", 0, 2, 0) + b"hi"])


def test_unknown_pipeline(tw):
    with pytest.raises(tensorwire.UnknownPipeline) as e:
        tw.infer_text("hello", pipeline=99)
    assert e.value.request_id is not None  # the proxy's answer, not a local check


@pytest.mark.parametrize("case", ["text-to-image", "image-to-text", "unlisted-format"])
def test_kind_mismatch(tw, case):
    with pytest.raises(tensorwire.KindMismatch):
        if case == "text-to-image":
            tw.infer_text("hello", pipeline="resnet50")
        elif case == "image-to-text":
            tw.infer_image(np.zeros((8, 8, 3), np.uint8), pipeline="minilm")
        else:
            tw.infer_image(np.zeros((8, 8), np.uint8), pipeline="rgb-only")


def test_incomplete_when_a_fragment_is_dropped(proxy):
    with tensorwire.Client("127.0.0.1", proxy.port, timeout=3.0, retries=0,
                           faults=tensorwire.Faults(drop_seqs={2})) as tw:
        t0 = time.monotonic()
        with pytest.raises(tensorwire.Incomplete):
            tw.infer_text("x" * 5000, pipeline="minilm", overlap=0)
        assert time.monotonic() - t0 < 2.5  # the proxy's timeout, not ours


def test_invalid_content_bad_utf8(tw):
    with pytest.raises(tensorwire.InvalidContent):
        tw.infer_text(b"valid start \xff\xfe then junk", pipeline="minilm")


def test_invalid_content_tile_without_halo(tw):
    # small-u8 is 32x24: one tile claiming the whole output from 32x32 pixels
    # of a 64x64 image lacks the windows of most output pixels.
    body = struct.pack(">HHBBHHHHHHHHH", 64, 64, 0, 0, 0, 0, 32, 32, 0, 0, 32, 24, 0) + bytes(32 * 32)
    with pytest.raises(tensorwire.InvalidContent):
        tw.request([hdr(2, 4, 0x1004) + body])


TIGHT = """
[ingress]
# One worker: max_requests_in_flight is split between socket workers, and
# the two clients of the OVERLOADED test must meet the same limit.
workers = 1

[limits]
max_image_pixels = 10000
max_text_bytes = 100
max_fragments = 50
max_requests_in_flight = 1
reassembly_timeout_ms = 400

[[pipelines]]
id = 1
name = "img"
kind = "image"
[pipelines.image]
width = 8
height = 8

[[pipelines]]
id = 2
name = "txt"
kind = "text"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"
"""


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    from conftest import Proxy
    p = Proxy(TIGHT, tmp_path_factory.mktemp("tight"), "tight")
    yield p
    p.stop()


def test_too_large_pixels_bytes_fragments(tight):
    with tensorwire.Client("127.0.0.1", tight.port, timeout=3.0, retries=0) as tw:
        assert tw.describe().limits.max_image_pixels == 10000
        with pytest.raises(tensorwire.TooLarge):
            tw.infer_image(np.zeros((100, 101), np.uint8), pipeline="img")
        with pytest.raises(tensorwire.TooLarge):
            tw.infer_text("y" * 101, pipeline="txt")
        tw.infer_text("y" * 100, pipeline="txt")  # the limit itself is fine
    with tensorwire.Client("127.0.0.1", tight.port, timeout=3.0, retries=0, max_datagram=100) as tw:
        with pytest.raises(tensorwire.TooLarge):  # 180 fragments of 52 pixels
            tw.infer_image(np.zeros((90, 100), np.uint8), pipeline="img")


def test_overloaded_when_another_request_is_in_flight(tight):
    with tensorwire.Client("127.0.0.1", tight.port, timeout=3.0, retries=0) as tw, \
            tensorwire.Client("127.0.0.1", tight.port, timeout=3.0, retries=0) as other:
        tw.describe()
        other.describe()  # (validates its address on a revision-3 proxy)
        # The first of two fragments from another client: stays in flight.
        other.sock.send(text_dg(2, 0x2001, 0, 2, 0, 10, b"hello"))
        time.sleep(0.02)
        with pytest.raises(tensorwire.Overloaded):
            tw.infer_text("hi", pipeline="txt")
        other.sock.settimeout(3)
        d = other.sock.recv(2048)  # the other one ends INCOMPLETE
        assert d[3] == 0x82 and struct.unpack_from(">H", d, 24)[0] == 6
        assert tw.infer_text("hi", pipeline="txt").outputs["input_ids"].shape[0] == 1


def test_upstream_unavailable(make_proxy):
    port = free_port(socket.SOCK_STREAM)  # nobody listens there
    p = make_proxy(f"""
[upstreams.down]
kind = "kserve"
url = "http://127.0.0.1:{port}"
model = "identity"
connect_timeout_ms = 200
request_timeout_ms = 1000

[[pipelines]]
id = 1
name = "t"
kind = "text"
upstream = "down"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"
""")
    with tensorwire.Client("127.0.0.1", p.port, timeout=5.0, retries=0) as tw:
        with pytest.raises(tensorwire.UpstreamUnavailable):
            tw.infer_text("hello", pipeline="t")


def test_no_answer_is_a_timeout_after_retries():
    port = free_port()  # nobody there: ICMP errors are ignored, retries counted
    with tensorwire.Client("127.0.0.1", port, timeout=0.2, retries=2) as tw:
        t0 = time.monotonic()
        with pytest.raises(tensorwire.Timeout) as e:
            tw.describe()
        assert 0.55 < time.monotonic() - t0 < 2.0
        assert "3 attempt" in str(e.value)
