"""Images through the real proxy's echo upstream, compared with independent
references: Pillow 12.3 resize(BILINEAR) (antialias pipelines) or OpenCV
cv2.resize(INTER_LINEAR) (antialias=false), then (v/255 - mean)/std in
float32 -- bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import image_reference, load_image, normalize

import tensorwire

FORMATS = ["GRAY8", "RGB8", "BGR8", "RGBA8", "BGRA8"]


def make_input(fmt: str, h: int = 217, w: int = 301) -> np.ndarray:
    """A photo crop of odd size in ``fmt`` (alpha varies, so dropping it matters)."""
    if fmt == "GRAY8":
        return np.ascontiguousarray(load_image("camera.png")[40:40 + h, 60:60 + w])
    rgb = load_image("astronaut.png")[30:30 + h, 50:50 + w]
    alpha = (np.arange(h * w, dtype=np.uint32).reshape(h, w) * 7 % 256).astype(np.uint8)
    return np.ascontiguousarray({
        "RGB8": rgb, "BGR8": rgb[..., ::-1],
        "RGBA8": np.dstack([rgb, alpha]), "BGRA8": np.dstack([rgb[..., ::-1], alpha]),
    }[fmt])


@pytest.fixture(scope="module")
def tw(proxy):
    with tensorwire.Client("127.0.0.1", proxy.port, timeout=3.0, retries=0) as c:
        yield c


@pytest.mark.parametrize("tiles", [False, True], ids=["rows", "tiles"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_pixel_format_both_ways_fp32_nchw_pillow(tw, fmt, tiles):
    img = make_input(fmt)
    r = tw.infer_image(img, pipeline="resnet50", pixel_format=fmt if fmt.startswith("BGR") else None,
                       tiles=tiles)
    p = tw.describe().pipeline("resnet50").image
    out = r.outputs["input"]
    assert out.dtype == np.float32 and out.shape == (1, 3, 224, 224)
    want = normalize(image_reference(img, fmt, 224, 224, True), p.mean, p.std).transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(out, want)
    assert r.raw.content_type == 2 and r.timings.datagrams_sent > 1 and r.timings.attempts == 1


@pytest.mark.parametrize("tiles", [False, True], ids=["rows", "tiles"])
@pytest.mark.parametrize("fmt", ["GRAY8", "BGRA8"])
def test_opencv_pipeline_nhwc_fp32(tw, fmt, tiles):
    img = make_input(fmt, 150, 333)
    r = tw.infer_image(img, pipeline="cv-nhwc", pixel_format=fmt, tiles=tiles)
    out = r.outputs["input"]
    assert out.shape == (1, 64, 96, 3)
    want = normalize(image_reference(img, fmt, 96, 64, False), [0.5, 0.4, 0.3], [0.25, 0.2, 0.3])
    np.testing.assert_array_equal(out[0], want)


@pytest.mark.parametrize("size", [(70, 50), (20, 13), (300, 451)])
@pytest.mark.parametrize("tiles", [False, True], ids=["rows", "tiles"])
def test_opencv_uint8_up_and_down(tw, size, tiles):
    h, w = size
    img = make_input("RGB8", h, w) if h <= 217 else load_image("chelsea.png")
    r = tw.infer_image(img, pipeline="cv-u8", tiles=tiles)
    np.testing.assert_array_equal(r.outputs["input"][0].transpose(1, 2, 0),
                                  image_reference(img, "RGB8", 50, 70, False))


def test_uint8_pipeline_equals_pillow_on_a_large_photo(tw):
    img = load_image("coffee.png")
    r = tw.infer_image(img, pipeline="small-u8")
    np.testing.assert_array_equal(r.outputs["input"][0].transpose(1, 2, 0),
                                  image_reference(img, "RGB8", 32, 24, True))
    # 600x400 -> 32x24: one output pixel's window (38x34 pixels) alone
    # exceeds a datagram, so no tiling exists; a crop tiles fine.
    with pytest.raises(ValueError, match="no tiling"):
        tw.infer_image(img, pipeline="small-u8", tiles=True)
    crop = np.ascontiguousarray(img[100:220, 200:360])
    r = tw.infer_image(crop, pipeline="small-u8", tiles=True)
    np.testing.assert_array_equal(r.outputs["input"][0].transpose(1, 2, 0),
                                  image_reference(crop, "RGB8", 32, 24, True))


def test_pil_images_and_bgr_conversion(tw):
    from PIL import Image
    rgb = make_input("RGB8")
    want = tw.infer_image(rgb, pipeline="small-u8").outputs["input"]
    for img, fmt in [(Image.fromarray(rgb), None), (Image.fromarray(rgb), "BGR8"),
                     (Image.fromarray(rgb).convert("P"), None)]:
        got = tw.infer_image(img, pipeline="small-u8", pixel_format=fmt).outputs["input"]
        if img.mode == "P":  # palette quantized: compare with its own RGB
            got_ref = tw.infer_image(np.asarray(img.convert("RGB")), pipeline="small-u8").outputs["input"]
            np.testing.assert_array_equal(got, got_ref)
        else:
            np.testing.assert_array_equal(got, want)


def test_a_1080p_frame_as_rows_and_tiles_gives_the_same_tensor(proxy):
    # As tiles the frame is 12,544 datagrams (17.8 MB with the halos), more
    # than the proxy's 8 MiB socket buffer: paced, as a user would on a
    # busy machine.
    tw = tensorwire.Client("127.0.0.1", proxy.port, timeout=3.0, retries=1, max_rate=250_000)
    rng = np.random.default_rng(5)
    base = load_image("rocket.jpg")
    img = np.ascontiguousarray(np.tile(base, (3, 3, 1))[:1080, :1920])
    img[::7, ::5] = rng.integers(0, 256, img[::7, ::5].shape, dtype=np.uint8)
    rows = tw.infer_image(img, pipeline="resnet50")
    tiles = tw.infer_image(img, pipeline="resnet50", tiles=True)
    np.testing.assert_array_equal(rows.outputs["input"], tiles.outputs["input"])
    p = tw.describe().pipeline("resnet50").image
    want = normalize(image_reference(img, "RGB8", 224, 224, True), p.mean, p.std).transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(rows.outputs["input"], want)
    assert rows.timings.datagrams_sent == 1080 * 5 and tiles.timings.datagrams_sent >= 12544
    tw.close()


def test_bad_inputs_are_refused_before_sending(tw):
    with pytest.raises(TypeError):
        tw.infer_image(np.zeros((4, 4, 3), np.float32), pipeline="resnet50")
    with pytest.raises(ValueError):
        tw.infer_image(np.zeros((4, 4, 2), np.uint8), pipeline="resnet50")
    with pytest.raises(ValueError):
        tw.infer_image(np.zeros((4, 4, 3), np.uint8), pipeline="resnet50", pixel_format="RGBA8")
    with pytest.raises(tensorwire.UnknownPipeline):
        tw.infer_image(np.zeros((4, 4, 3), np.uint8), pipeline="no-such-name")
