"""Checks that the client-side baseline does the same work as tensorwire:
the tensor client_preprocess.py sends (testdata/triton/head.py:
Pillow resize + torchvision float32 normalization) equals bit for bit
the tensor tensorwire's default pipeline produces for the same image,
and the token ids of its tokenizer equal tensorwire's for the same text.

    # compare files written by `tensorwire send-image IMG --out x.npy`
    python check_equal_work.py --image IMG x.npy
    python check_equal_work.py --text FILE ids_input_ids.npy
    # or let it start `tensorwire run` (echo upstream, default config) on
    # a free loopback port and send every image/text itself
    python check_equal_work.py --run [--tensorwire target/release/tensorwire]
            [--images testdata/images] [--texts testdata/text/*.txt]

Images are decoded by both sides from the file; PNG decoding is exact
everywhere, JPEG decoders may differ by a unit here and there, so a JPEG
mismatch is reported with the pixel difference of the two decodes
(tensorwire's decoded pixels are not visible to this script: use PNG
for the strict check, which the --run default does).
Exit 0 when everything is equal, 1 otherwise.
"""

import argparse
import glob
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

import common
from common import head

DEFAULT_IMAGES = sorted(glob.glob(os.path.join(common.REPO, "testdata", "images", "*.png")))
DEFAULT_TEXTS = [os.path.join(common.REPO, "testdata", "text", f)
                 for f in ("zen-of-python.txt", "gpl-3.0.txt", "utf8-demo.txt")]


def image_equal(image, npy):
    from PIL import Image

    rgb = np.asarray(Image.open(image).convert("RGB"))
    ours = head.preprocess_image(rgb)[None]
    theirs = np.load(npy)
    if theirs.dtype != np.float32 or theirs.shape != ours.shape:
        print(f"DIFF {image}: tensorwire {theirs.dtype} {theirs.shape}, baseline {ours.dtype} {ours.shape}")
        return False
    same = ours.view(np.uint32) == theirs.view(np.uint32)
    if same.all():
        print(f"EQUAL {os.path.basename(image)}: {ours.shape} float32, bit for bit")
        return True
    d = np.abs(ours.astype(np.float64) - theirs)
    why = (" (a JPEG: tensorwire decodes with the image crate, this script with Pillow's "
           "libjpeg-turbo; see the docstring)") if image.lower().endswith((".jpg", ".jpeg")) else ""
    print(f"DIFF {os.path.basename(image)}: {(~same).sum()} of {same.size} values differ "
          f"(max |diff| {d.max():.3g}){why}")
    return False


def text_equal(text_file, npy):
    text = open(text_file, encoding="utf-8").read()
    ids, _, _ = head.tokenize(head.load_tokenizer(), text)
    theirs = np.load(npy)
    if theirs.shape == ids.shape and (theirs.astype(np.int64) == ids).all():
        print(f"EQUAL {os.path.basename(text_file)}: {ids.shape[1]} token ids")
        return True
    print(f"DIFF {os.path.basename(text_file)}: tensorwire {theirs.shape}, baseline {ids.shape}")
    return False


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_all(a):
    tw = os.path.abspath(a.tensorwire)
    if not os.access(tw, os.X_OK):
        sys.exit(f"no tensorwire binary at {tw} (cargo build --release)")
    port = free_port()
    server = f"127.0.0.1:{port}"
    env = dict(os.environ, TENSORWIRE__INGRESS__MODE="socket",
               TENSORWIRE__INGRESS__LISTEN=server, TENSORWIRE__ADMIN__LISTEN="",
               TENSORWIRE__STATS__LOG_INTERVAL_MS="0")
    proxy = subprocess.Popen([tw, "run"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    ok = True
    try:
        for _ in range(100):  # until DESCRIBE answers
            if subprocess.run([tw, "describe", "--server", server], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        with tempfile.TemporaryDirectory() as tmp:
            for img in a.images:
                npy = os.path.join(tmp, "x.npy")
                subprocess.run([tw, "send-image", img, "--server", server, "--pipeline", "1",
                                "--format", "RGB8", "--out", npy], check=True, capture_output=True)
                ok &= image_equal(img, npy)
            for txt in a.texts:
                out = os.path.join(tmp, "ids.npy")
                subprocess.run([tw, "send-text", txt, "--server", server, "--pipeline", "2",
                                "--out", out], check=True, capture_output=True)
                ok &= text_equal(txt, os.path.join(tmp, "ids_input_ids.npy"))
    finally:
        proxy.kill()
        proxy.wait()
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("npy", nargs="?", help="tensor written by tensorwire send-image/send-text --out")
    ap.add_argument("--image", help="the image the .npy was made from")
    ap.add_argument("--text", help="the text file the .npy (input_ids) was made from")
    ap.add_argument("--run", action="store_true", help="start tensorwire and check every file")
    ap.add_argument("--tensorwire", default=os.path.join(common.REPO, "target", "release", "tensorwire"))
    ap.add_argument("--images", nargs="+", default=DEFAULT_IMAGES)
    ap.add_argument("--texts", nargs="+", default=DEFAULT_TEXTS)
    a = ap.parse_args()
    if a.run:
        ok = run_all(a)
    elif a.npy and a.image:
        ok = image_equal(a.image, a.npy)
    elif a.npy and a.text:
        ok = text_equal(a.text, a.npy)
    else:
        ap.error("give NPY with --image or --text, or --run")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
