#!/usr/bin/env python3
"""Embed texts: texts -> tensorwire (tokenization on the packet path) -> an
embedding model, then print the pairwise cosine similarities.

Configure a text pipeline whose upstream is your embedding model, either a
KServe v2 / Triton model taking input_ids (+ attention_mask,
token_type_ids), e.g. an ONNX export of all-MiniLM-L6-v2:

    [upstreams.embedder]
    kind = "kserve"
    url = "http://127.0.0.1:8000"
    model = "minilm"

or vLLM's OpenAI embeddings endpoint:

    [upstreams.embedder]
    kind = "openai"
    url = "http://127.0.0.1:8001"
    model = "intfloat/e5-small-v2"
    endpoint = "embeddings"

    [[pipelines]]
    id = 2
    name = "minilm"
    kind = "text"
    upstream = "embedder"
    [pipelines.text]
    tokenizer = "builtin:all-MiniLM-L6-v2"

then:

    python examples/embed_texts.py --proxy 127.0.0.1:7878 --pipeline minilm "a cat" "a kitten" "a car"
    python examples/embed_texts.py --file sentences.txt      # one text per line

The embedding is the model's first float output: [1, D] as it is, or
[1, L, D] token embeddings mean-pooled (sentence-transformers style); for an
OpenAI answer, data[0].embedding.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Optional

import numpy as np

import tensorwire


def embedding_of(result: tensorwire.InferResult) -> Optional[np.ndarray]:
    if result.raw.content_type == tensorwire.ContentType.JSON and not result.outputs:
        data = result.json.get("data") or []
        return np.asarray(data[0]["embedding"], np.float32) if data else None
    for arr in result.outputs.values():
        if arr.dtype.kind == "f":
            if arr.ndim == 3:
                return arr[0].astype(np.float32).mean(axis=0)
            return arr.reshape(-1).astype(np.float32)
    return None


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("texts", nargs="*")
    ap.add_argument("--file", type=Path, help="one text per line")
    ap.add_argument("--proxy", default="127.0.0.1:7878")
    ap.add_argument("--pipeline", default="minilm")
    ap.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args()
    texts = list(a.texts) + (a.file.read_text().splitlines() if a.file else [])
    texts = [t for t in texts if t.strip()]
    if not texts:
        ap.error("no texts")
    host, port = a.proxy.rsplit(":", 1)
    pipeline = int(a.pipeline) if a.pipeline.isdigit() else a.pipeline
    async with tensorwire.AsyncClient(host, int(port), timeout=a.timeout, retries=1) as tw:
        results = await asyncio.gather(*(tw.infer_text(t, pipeline=pipeline) for t in texts))
    vecs = []
    for t, r in zip(texts, results):
        v = embedding_of(r)
        if v is None:
            shapes = {k: (str(x.dtype), list(x.shape)) for k, x in r.outputs.items()}
            print(f"{t[:40]!r}: no float output in the answer ({shapes}); is the upstream an embedding model?")
            return 1
        vecs.append(v / (np.linalg.norm(v) or 1.0))
        print(f"{t[:50]!r:54s} dim {v.size}  {r.timings.total_s * 1e3:.1f} ms")
    m = np.stack(vecs) @ np.stack(vecs).T
    print("\ncosine similarity")
    for i, t in enumerate(texts):
        print(f"{t[:24]:24s} " + " ".join(f"{x:6.3f}" for x in m[i]))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
