#!/usr/bin/env python3
"""Classify a folder of photos: photos -> tensorwire (resize + normalize on
the packet path) -> Triton / KServe, printing each model answer.

The proxy does the preprocessing; configure a pipeline whose upstream is
your Triton model, e.g. in tensorwire.toml:

    [upstreams.triton]
    kind = "kserve"
    url = "http://127.0.0.1:8000"
    model = "resnet50"

    [[pipelines]]
    id = 1
    name = "resnet50"
    kind = "image"
    upstream = "triton"
    [pipelines.image]
    width = 224
    height = 224

then:

    python examples/classify_triton.py photos/ --proxy 127.0.0.1:7878 --pipeline resnet50 \
        [--labels imagenet_classes.txt] [--tiles] [--concurrency 16]

For each output that looks like logits (a float tensor [1, N] or [N]) the
top-5 classes are printed (with --labels, their names); other outputs are
summarized (name, dtype, shape). With the built-in `echo` upstream the
"answer" is the preprocessed tensor itself.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np

import tensorwire

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def describe_outputs(name: str, result: tensorwire.InferResult, labels: list) -> str:
    lines = [f"{name}  ({result.timings.total_s * 1e3:.1f} ms, {result.timings.datagrams_sent} datagrams)"]
    for out_name, arr in result.outputs.items():
        flat = arr.reshape(-1) if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[0] == 1) else None
        if flat is not None and arr.dtype.kind == "f" and flat.size > 5:
            p = softmax(flat.astype(np.float64))
            top = np.argsort(-flat)[:5]
            lines.append(f"  {out_name}: top-5")
            for k in top:
                label = labels[k] if k < len(labels) else f"class {k}"
                lines.append(f"    {k:6d} {label:30s} logit {flat[k]:9.4f}  p {p[k]:.4f}")
        else:
            lines.append(f"  {out_name}: {arr.dtype} {list(arr.shape)}")
    if not result.outputs:
        lines.append(f"  (body: {result.raw.body[:200]!r})")
    return "\n".join(lines)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--proxy", default="127.0.0.1:7878", help="host:port of the tensorwire proxy")
    ap.add_argument("--pipeline", default="resnet50", help="pipeline name or id")
    ap.add_argument("--labels", type=Path, help="one class name per line")
    ap.add_argument("--tiles", action="store_true", help="send tiles with their halos instead of rows")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args()
    from PIL import Image

    host, port = a.proxy.rsplit(":", 1)
    labels = a.labels.read_text().splitlines() if a.labels else []
    photos = sorted(p for p in a.folder.rglob("*") if p.suffix.lower() in EXTENSIONS)
    if not photos:
        print(f"no photos in {a.folder}", file=sys.stderr)
        return 1
    pipeline = int(a.pipeline) if a.pipeline.isdigit() else a.pipeline
    sem = asyncio.Semaphore(a.concurrency)
    failures = 0
    async with tensorwire.AsyncClient(host, int(port), timeout=a.timeout, retries=1) as tw:
        desc = await tw.describe()
        print(f"proxy {a.proxy}: pipeline {desc.pipeline(pipeline)}")

        async def one(path: Path):
            async with sem:
                with Image.open(path) as im:
                    im.load()
                    return path, await tw.infer_image(im, pipeline=pipeline, tiles=a.tiles)

        for fut in asyncio.as_completed([one(p) for p in photos]):
            try:
                path, result = await fut
                print(describe_outputs(str(path), result, labels))
            except tensorwire.TensorwireError as e:
                failures += 1
                print(f"error: {e}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
