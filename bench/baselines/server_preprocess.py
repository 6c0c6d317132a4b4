"""Baseline: preprocessing on the server, the "Triton Python backend"
way. The client sends the raw RGB pixels (UINT8 [1, H, W, 3]) to
`preprocess_logits`, or the UTF-8 text (BYTES [1, 1]) to
`preprocess_text`, with tritonclient.http binary data; Triton's Python
backend resizes/normalizes (Pillow) or tokenizes (`tokenizers`) and runs
the same head as `logits` / `text_head`.
Output: README.md beside this file.
"""

import sys

import numpy as np
import tritonclient.http as httpclient

import common


class ServerImage(common.Workload):
    name = "server_preprocess"

    def __init__(self, images):
        self.images = images

    def describe(self):
        return [f"{n} {img.shape[1]}x{img.shape[0]}" for n, img in self.images]

    def request(self, i):
        _, rgb = self.images[i % len(self.images)]
        raw = rgb[None]
        inp = httpclient.InferInput("raw", list(raw.shape), "UINT8")
        inp.set_data_from_numpy(raw, binary_data=True)
        return [inp], [httpclient.InferRequestedOutput("logits", binary_data=True)]


class ServerText(common.Workload):
    name = "server_preprocess"

    def __init__(self, texts):
        self.texts = [(n, np.array([[t.encode("utf-8")]], dtype=object)) for n, t in texts]

    def describe(self):
        return [f"{n} {len(t[0, 0])} B" for n, t in self.texts]

    def request(self, i):
        _, t = self.texts[i % len(self.texts)]
        inp = httpclient.InferInput("text", [1, 1], "BYTES")
        inp.set_data_from_numpy(t, binary_data=True)
        return [inp], [httpclient.InferRequestedOutput("embedding", binary_data=True)]


def main():
    a = common.parse_args(__doc__.split("\n\n")[0], "preprocess_logits", "preprocess_text")
    w = ServerImage(common.load_images(a)) if a.mode == "image" else ServerText(common.load_texts(a))
    return common.run(a, w)


if __name__ == "__main__":
    sys.exit(main())
