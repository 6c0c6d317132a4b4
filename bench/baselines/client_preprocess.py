"""Baseline: the usual client path without tensorwire. The client
preprocesses (images: Pillow resize BILINEAR + torchvision-style float32
normalization, testdata/triton/head.py; texts: the `tokenizers` package
with all-MiniLM-L6-v2's tokenizer.json, truncation 256) and sends the
tensors with tritonclient.http as binary data: images to `logits`
(input__0 FP32 [1, 3, 224, 224]), texts to `text_head` (input_ids,
attention_mask, token_type_ids INT64 [1, L]; or --model text_identity).

The tensor it sends is bit for bit the one tensorwire's default image
pipeline produces (check_equal_work.py, tests/upstream_triton.rs).
Output: README.md beside this file.
"""

import sys

import tritonclient.http as httpclient

import common
from common import head


class ClientImage(common.Workload):
    name = "client_preprocess"

    def __init__(self, images):
        self.images = images

    def describe(self):
        return [f"{n} {img.shape[1]}x{img.shape[0]}" for n, img in self.images]

    def request(self, i):
        _, rgb = self.images[i % len(self.images)]
        x = head.preprocess_image(rgb)[None]  # the client-side work, timed
        inp = httpclient.InferInput("input__0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        return [inp], [httpclient.InferRequestedOutput(self.output, binary_data=True)]


class ClientText(common.Workload):
    name = "client_preprocess"

    def __init__(self, texts, model):
        self.texts = texts
        self.tok = head.load_tokenizer()
        self.outputs = ["input_ids", "attention_mask", "token_type_ids"] \
            if model == "text_identity" else ["embedding"]

    def describe(self):
        return [f"{n} {len(t.encode())} B" for n, t in self.texts]

    def request(self, i):
        _, text = self.texts[i % len(self.texts)]
        tensors = head.tokenize(self.tok, text)  # the client-side work, timed
        inputs = []
        for n, t in zip(("input_ids", "attention_mask", "token_type_ids"), tensors):
            inp = httpclient.InferInput(n, list(t.shape), "INT64")
            inp.set_data_from_numpy(t, binary_data=True)
            inputs.append(inp)
        return inputs, [httpclient.InferRequestedOutput(o, binary_data=True) for o in self.outputs]


def main():
    a = common.parse_args(__doc__.split("\n\n")[0], "logits", "text_head")
    if a.mode == "image":
        w = ClientImage(common.load_images(a))
        w.output = "output__0" if a.model == "identity_fp32" else "logits"
    else:
        w = ClientText(common.load_texts(a), a.model)
    return common.run(a, w)


if __name__ == "__main__":
    sys.exit(main())
