"""The client through the proxy to a real KServe v2 server
(testdata/kserve/models.py from the repo's .venv): the identity model
returns the proxy's tensors, which must equal the references; an unknown
model comes back as UpstreamError with the server's message."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import image_reference, load_image, normalize, tokenizer

import tensorwire


@pytest.fixture(scope="module")
def ks_proxy(kserve, tmp_path_factory):
    from conftest import Proxy
    p = Proxy(f"""
[upstreams.ks]
kind = "kserve"
url = "{kserve.url}"
model = "identity"
request_timeout_ms = 10000

[upstreams.bad]
kind = "kserve"
url = "{kserve.url}"
model = "no_such_model"

[[pipelines]]
id = 1
name = "resnet50"
kind = "image"
upstream = "ks"
[pipelines.image]
width = 224
height = 224
tensor_name = "pixel_values"

[[pipelines]]
id = 2
name = "minilm"
kind = "text"
upstream = "ks"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"

[[pipelines]]
id = 3
name = "half"
kind = "image"
upstream = "ks"
[pipelines.image]
width = 96
height = 64
antialias = false
dtype = "FP16"

[[pipelines]]
id = 4
name = "missing-model"
kind = "text"
upstream = "bad"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"
""", tmp_path_factory.mktemp("ks"), "ks")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def tw(ks_proxy):
    with tensorwire.Client("127.0.0.1", ks_proxy.port, timeout=10.0, retries=0) as c:
        yield c


@pytest.mark.parametrize("tiles", [False, True], ids=["rows", "tiles"])
def test_image_round_trip_through_kserve_identity(tw, tiles):
    img = load_image("chelsea.png")
    r = tw.infer_image(img, pipeline="resnet50", tiles=tiles)
    assert tw.describe().pipeline("resnet50").upstream == "kserve"
    assert list(r.outputs) == ["pixel_values"] and r.header.get("model_name") == "identity"
    p = tw.describe().pipeline(1).image
    want = normalize(image_reference(img, "RGB8", 224, 224, True), p.mean, p.std).transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(r.outputs["pixel_values"], want)


def test_fp16_round_trip(tw):
    img = load_image("coffee.png")
    r = tw.infer_image(img, pipeline="half")
    out = r.outputs["input"]
    assert out.dtype == np.float16 and out.shape == (1, 3, 64, 96)
    p = tw.describe().pipeline("half").image
    want = normalize(image_reference(img, "RGB8", 96, 64, False), p.mean, p.std).astype(np.float16)
    np.testing.assert_array_equal(out[0], want.transpose(2, 0, 1))


def test_text_round_trip(tw):
    text = "KServe speaks v2; tensorwire speaks UDP. 🙂"
    r = tw.infer_text(text, pipeline="minilm")
    enc = tokenizer(256, True, False).encode(text)
    np.testing.assert_array_equal(r.outputs["input_ids"][0], enc.ids)
    np.testing.assert_array_equal(r.outputs["attention_mask"][0], enc.attention_mask)


def test_unknown_model_is_an_upstream_error_with_the_servers_message(tw):
    with pytest.raises(tensorwire.UpstreamError) as e:
        tw.infer_text("hello", pipeline="missing-model")
    assert "no_such_model" in e.value.message
