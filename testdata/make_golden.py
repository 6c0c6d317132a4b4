#!/usr/bin/env python3
"""Golden resize outputs for tests/golden_resize.rs.

What it makes (under testdata/golden/resize/):

* for each test photo in testdata/images/ (decoded with Pillow to its native
  mode, RGB or L) and each target size, two raw uint8 files, row-major,
  channels interleaved, no header:
    <stem>_<W>x<H>_antialias.u8  Pillow  Image.resize((W, H), BILINEAR)
    <stem>_<W>x<H>_linear.u8     OpenCV  cv2.resize(arr, (W, H),
                                         interpolation=cv2.INTER_LINEAR)
  (cv2 runs on the same decoded numpy array; its dsize is (width, height));
* <stem>.src.u8 for JPEG sources only: the pixels Pillow (libjpeg-turbo)
  decoded. JPEG decoders may differ (IDCT, chroma upsampling), so the Rust
  test resizes these stored pixels, not its own decode. PNG decoding is
  lossless and exact, so PNG sources are read from testdata/images/;
* manifest.json: every case -> source file, stored source pixels (if any),
  mode, in size, out size, channels, output file and its sha256, plus the
  library versions used.

Target sizes: 224x224, 299x299, 64x48, 17x13 for every photo; the upscale
1000x700 only for camera.png (grayscale, 0.7 MB per mode), to keep the
directory under ~6 MB.

Generated with (pinned):
    Python 3.11.7, pillow==12.3.0, opencv-python-headless==4.14.0.94 (cv2 4.14.0),
    numpy==2.4.6

Rerun (from the repository root):
    python3 -m venv /tmp/pyref
    /tmp/pyref/bin/pip install "pillow==12.3.0" \
        "opencv-python-headless==4.14.0.94" "numpy==2.4.6"
    /tmp/pyref/bin/python testdata/make_golden.py
The output is deterministic: rerunning with the same versions gives the
same bytes (check the sha256 values in manifest.json).
"""

import hashlib
import json
import os
import sys

import cv2
import numpy as np
import PIL
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGES = os.path.join(HERE, "images")
OUT = os.path.join(HERE, "golden", "resize")

PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "camera.png"]
SIZES = [(224, 224), (299, 299), (64, 48), (17, 13)]
# The upscale, only for these photos (size budget).
UPSCALE = (1000, 700)
UPSCALE_FOR = {"camera.png"}

EXPECTED = {"pillow": "12.3.", "cv2": "4."}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(name: str, data: bytes) -> str:
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    return sha256(data)


def main() -> int:
    if not PIL.__version__.startswith(EXPECTED["pillow"]):
        sys.exit(f"need Pillow 12.3.x, have {PIL.__version__}")
    if not cv2.__version__.startswith(EXPECTED["cv2"]):
        sys.exit(f"need OpenCV 4.x, have {cv2.__version__}")
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".u8") or f == "manifest.json":
            os.remove(os.path.join(OUT, f))

    sources = {}
    cases = []
    for photo in PHOTOS:
        stem, ext = os.path.splitext(photo)
        im = Image.open(os.path.join(IMAGES, photo))
        im.load()
        if im.mode not in ("RGB", "L"):
            sys.exit(f"{photo}: unexpected mode {im.mode}")
        arr = np.asarray(im)  # (H, W, 3) or (H, W), uint8
        assert arr.dtype == np.uint8
        channels = 1 if im.mode == "L" else 3
        in_w, in_h = im.size
        src = {
            "file": f"images/{photo}",
            "mode": im.mode,
            "width": in_w,
            "height": in_h,
            "channels": channels,
            "sha256_file": sha256(open(os.path.join(IMAGES, photo), "rb").read()),
        }
        if ext.lower() in (".jpg", ".jpeg"):
            raw = np.ascontiguousarray(arr).tobytes()
            src["pixels"] = f"{stem}.src.u8"
            src["sha256"] = write(src["pixels"], raw)
        sources[photo] = src

        sizes = list(SIZES) + ([UPSCALE] if photo in UPSCALE_FOR else [])
        for out_w, out_h in sizes:
            pil = np.asarray(im.resize((out_w, out_h), Image.Resampling.BILINEAR))
            cv = cv2.resize(arr, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
            for mode, res in (("antialias", pil), ("linear", cv)):
                assert res.shape[:2] == (out_h, out_w), (photo, mode, res.shape)
                assert res.dtype == np.uint8
                name = f"{stem}_{out_w}x{out_h}_{mode}"
                data = np.ascontiguousarray(res).tobytes()
                assert len(data) == out_w * out_h * channels
                cases.append(
                    {
                        "name": name,
                        "source": photo,
                        "mode": mode,
                        "library": "Pillow Image.resize BILINEAR"
                        if mode == "antialias"
                        else "cv2.resize INTER_LINEAR",
                        "color": im.mode,
                        "in_w": in_w,
                        "in_h": in_h,
                        "out_w": out_w,
                        "out_h": out_h,
                        "channels": channels,
                        "file": f"{name}.u8",
                        "sha256": write(f"{name}.u8", data),
                    }
                )

    manifest = {
        "generator": "testdata/make_golden.py",
        "versions": {
            "python": sys.version.split()[0],
            "pillow": PIL.__version__,
            "opencv": cv2.__version__,
            "numpy": np.__version__,
        },
        "layout": "raw uint8, row-major, channels interleaved, no header",
        "sources": sources,
        "cases": cases,
    }
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"{len(cases)} cases, {total / 1e6:.2f} MB in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
