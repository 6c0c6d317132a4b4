"""Writes perf_analyzer --input-data directories for the Triton test
models: one binary file per input name, row-major, little-endian, one
directory per model (perf_analyzer refuses files that are not inputs of
the model it runs).

  OUT/logits/input__0
             FP32 [3, 224, 224]  the preprocessed image (for `logits`,
             `identity_fp32`): tensorwire's tensor from a .npy written by
             `tensorwire send-image IMG --out x.npy` (--npy), else the
             client baseline's preprocessing of IMG (bit for bit the
             same: check_equal_work.py)
  OUT/preprocess_logits/raw
             UINT8 [H, W, 3]     the decoded RGB pixels (for
             `preprocess_logits`, with --shape raw:H,W,3)

    python perf_analyzer_input.py --image testdata/images/chelsea.png --out /tmp/pa-input
    .venv-triton/bin/perf_analyzer -m logits -u 127.0.0.1:8000 -i http \\
        --input-data /tmp/pa-input/logits --shape input__0:3,224,224
    .venv-triton/bin/perf_analyzer -m preprocess_logits -u 127.0.0.1:8000 -i http \\
        --input-data /tmp/pa-input/preprocess_logits --shape raw:300,451,3
"""

import argparse
import os

import numpy as np
from PIL import Image

import common
from common import head


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--npy", help="tensorwire's tensor for the image ([1, 3, 224, 224] FP32)")
    ap.add_argument("--out", required=True, help="directory to write")
    a = ap.parse_args()
    rgb = np.asarray(Image.open(a.image).convert("RGB"))
    if a.npy:
        x = np.load(a.npy)
        assert x.dtype == np.float32 and x.shape == (1, 3, 224, 224), (x.dtype, x.shape)
        x = x[0]
    else:
        x = head.preprocess_image(rgb)
    for d in ("logits", "preprocess_logits"):
        os.makedirs(os.path.join(a.out, d), exist_ok=True)
    x.astype("<f4").tofile(os.path.join(a.out, "logits", "input__0"))
    rgb.astype(np.uint8).tofile(os.path.join(a.out, "preprocess_logits", "raw"))
    h, w, _ = rgb.shape
    print(f"wrote {a.out}/logits/input__0 (FP32 3,224,224: --shape input__0:3,224,224) and "
          f"{a.out}/preprocess_logits/raw (UINT8 {h},{w},3: --shape raw:{h},{w},3)")


if __name__ == "__main__":
    main()
