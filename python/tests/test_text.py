"""Texts through the real proxy, token ids compared with the `tokenizers`
package on the repo's all-MiniLM-L6-v2 tokenizer.json (truncation and
padding as the pipeline says), for every overlap and with UTF-8 characters
cut across datagrams."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import TESTDATA, tokenizer

import tensorwire
from tensorwire._fragment import text_spans

TEXTS = {
    "zen": (TESTDATA / "text/zen-of-python.txt").read_text(),
    "utf8-demo": (TESTDATA / "text/utf8-demo.txt").read_text(),
    "ja": (TESTDATA / "text/faker-lorem-ja_JP.py").read_text()[:6000],
    "emoji": (TESTDATA / "text/faker-emoji.py").read_text()[:5000],
    "mixed": "Grüße, 世界! 🙂🚀 naïve café — " * 120,
}


@pytest.fixture(scope="module")
def tw(proxy):
    with tensorwire.Client("127.0.0.1", proxy.port, timeout=3.0, retries=0) as c:
        yield c


def expected(text: str, max_length: int = 256, pad: bool = False):
    return tokenizer(max_length, truncation=True, pad=pad).encode(text)


def test_pipelines_say_what_the_references_assume(tw):
    d = tw.describe()
    a, b = d.pipeline("minilm").text, d.pipeline("minilm-16").text
    assert (a.max_length, a.truncation, a.padding, a.dtype) == (256, True, "none", "INT64")
    assert (b.max_length, b.truncation, b.padding, b.dtype) == (16, True, "max_length", "INT32")
    assert b.outputs == ("input_ids", "attention_mask")


def cuts_inside_a_character(data: bytes, overlap: int) -> int:
    """How many chunk boundaries fall inside a multi-byte UTF-8 character."""
    n = 0
    for s, e in text_spans(len(data), 1472, overlap):
        n += (0 < s < len(data) and data[s] & 0xC0 == 0x80) + (e < len(data) and data[e] & 0xC0 == 0x80)
    return n


@pytest.mark.parametrize("overlap", [0, 1, 64, 700, 1400])
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_texts_with_overlaps_equal_tokenizers(tw, name, overlap):
    text = TEXTS[name]
    r = tw.infer_text(text, pipeline="minilm", overlap=overlap)
    enc = expected(text)
    assert list(r.outputs) == ["input_ids", "attention_mask", "token_type_ids"]
    for key, want in [("input_ids", enc.ids), ("attention_mask", enc.attention_mask),
                      ("token_type_ids", enc.type_ids)]:
        got = r.outputs[key]
        assert got.dtype == np.int64 and got.shape == (1, len(want))
        np.testing.assert_array_equal(got[0], want)
    assert r.timings.datagrams_sent == len(text_spans(len(text.encode()), 1472, overlap))


@pytest.mark.parametrize("overlap", [0, 64])
def test_unicode_cut_across_datagrams(tw, overlap):
    # Truncation off the table: compare the whole id sequence of a text
    # whose chunk boundaries split 3- and 4-byte characters.
    text = "日本語のテキスト🙂と絵文字🚀。" * 300
    data = text.encode()
    assert cuts_inside_a_character(data, overlap) >= 3  # the test tests what it says
    r = tw.infer_text(text, pipeline="minilm", overlap=overlap)
    np.testing.assert_array_equal(r.outputs["input_ids"][0], expected(text).ids)
    assert r.timings.datagrams_sent >= 10


@pytest.mark.parametrize("text", ["", "a", "Hello, world!", TEXTS["zen"]])
def test_truncation_and_padding_to_max_length_int32(tw, text):
    r = tw.infer_text(text, pipeline="minilm-16")
    enc = expected(text, 16, pad=True)
    assert list(r.outputs) == ["input_ids", "attention_mask"]
    assert r.outputs["input_ids"].dtype == np.int32 and r.outputs["input_ids"].shape == (1, 16)
    np.testing.assert_array_equal(r.outputs["input_ids"][0], enc.ids)
    np.testing.assert_array_equal(r.outputs["attention_mask"][0], enc.attention_mask)


def test_bytes_are_sent_as_they_are(tw):
    text = "bytes in, ids out"
    a = tw.infer_text(text.encode(), pipeline=2).outputs["input_ids"]
    np.testing.assert_array_equal(a[0], expected(text).ids)


def test_pacing_gets_a_burst_larger_than_the_proxys_socket_buffer_through(proxy):
    # 14 KB with overlap 1435 moves one byte per chunk: ~12,600 datagrams,
    # 18 MB, more than the proxy's 8 MiB receive buffer holds at once.
    text = TEXTS["utf8-demo"]
    with tensorwire.Client("127.0.0.1", proxy.port, timeout=5.0, retries=0, max_rate=100_000) as tw:
        r = tw.infer_text(text, pipeline="minilm", overlap=1435)
    assert r.timings.datagrams_sent > 12_000 and r.timings.send_s >= r.timings.datagrams_sent / 100_000 * 0.95
    np.testing.assert_array_equal(r.outputs["input_ids"][0], expected(text).ids)
