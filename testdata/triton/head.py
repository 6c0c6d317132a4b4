"""The "model" behind the Triton test models: small deterministic heads
shared by the tensor-input models (logits, text_head) and the
server-side preprocessing models (preprocess_logits, preprocess_text),
so both paths do the same computation after preprocessing, and the
preprocessing functions themselves (Pillow + torchvision arithmetic,
`tokenizers`), which the client-side baseline imports too.

The weights are closed-form (sin/cos of the index) rather than a seeded
RNG so that a test in another language (tests/upstream_triton.rs) can
recompute the head independently. Everything is computed in float64
and only the result is rounded to float32.
"""

import os

import numpy as np

IMAGE_SIZE = 224
NUM_CLASSES = 1000
GRID = 4  # 4x4 average pooling cells per channel: 48 features
EMBED_DIM = 384

# ImageNet statistics, as torchvision's Normalize holds them (float32).
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

_FEATURES = 3 * GRID * GRID
# W[i, j] = sin(0.7 * (i * 48 + j) + 0.1), B[i] = 0.01 * cos(0.3 * i)
_W = np.sin(np.arange(NUM_CLASSES * _FEATURES, dtype=np.float64) * 0.7 + 0.1).reshape(
    NUM_CLASSES, _FEATURES
)
_B = 0.01 * np.cos(np.arange(NUM_CLASSES, dtype=np.float64) * 0.3)


def image_head(x):
    """x: FP32 [N, 3, 224, 224] (NCHW, normalized) -> logits FP32 [N, 1000].

    Features: the mean of each channel over a 4x4 grid of 56x56 cells
    (a global-average-pool stand-in); logits = W @ features + B.
    """
    n = x.shape[0]
    cell = IMAGE_SIZE // GRID
    f = (
        x.astype(np.float64)
        .reshape(n, 3, GRID, cell, GRID, cell)
        .mean(axis=(3, 5))
        .reshape(n, _FEATURES)
    )
    return (f @ _W.T + _B).astype(np.float32)


def text_head(input_ids, attention_mask, token_type_ids):
    """INT64 [N, L] each -> embedding FP32 [N, 384].

    Token t's embedding: e[k] = sin(0.37 * id + 0.11 * k) + 0.01 * type;
    the result is the mean over tokens with attention_mask 1 (mean pooling,
    as sentence-transformers does).
    """
    k = np.arange(EMBED_DIM, dtype=np.float64)
    e = np.sin(input_ids.astype(np.float64)[..., None] * 0.37 + k * 0.11)
    e += 0.01 * token_type_ids.astype(np.float64)[..., None]
    m = attention_mask.astype(np.float64)[..., None]
    count = np.maximum(m.sum(axis=1), 1.0)
    return ((e * m).sum(axis=1) / count).astype(np.float32)


def preprocess_image(hwc_rgb):
    """UINT8 [H, W, 3] RGB -> FP32 [3, 224, 224]: the usual PyTorch path,
    torchvision Resize on a PIL image (Pillow BILINEAR, antialiased),
    ToTensor (float32 / 255) and Normalize ((x - mean) / std, float32, in
    that order). tensorwire's image pipeline produces these exact bits.
    """
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(hwc_rgb), "RGB")
    img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    x = np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


TOKENIZER_JSON = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "tokenizers", "all-MiniLM-L6-v2", "tokenizer.json",
)
MAX_LENGTH = 256


def load_tokenizer(path=TOKENIZER_JSON):
    """all-MiniLM-L6-v2's tokenizer.json with tensorwire's default text
    pipeline settings: truncation to 256, no padding (the file itself
    says 128 and fixed padding; tensorwire's config overrides both)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_LENGTH)
    return tok


def tokenize(tok, text):
    """str -> (input_ids, attention_mask, token_type_ids), INT64 [1, L]."""
    enc = tok.encode(text)
    as_row = lambda v: np.array(v, dtype=np.int64).reshape(1, -1)  # noqa: E731
    return as_row(enc.ids), as_row(enc.attention_mask), as_row(enc.type_ids)
