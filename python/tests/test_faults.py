"""Loss, duplication and reordering injected by the client's test hook
(``tensorwire.Faults``); the answers still equal the references, and lost
fragments are recovered by resending the whole request under a new id."""
from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import image_reference, tokenizer
from fake_proxy import FakeProxy

import tensorwire
from tensorwire import Faults
from tensorwire._fragment import tile_grid

TEXT = "The quick brown fox jumps over the lazy dog. Ünïcödé 🙂 " * 100


def test_fault_orders():
    f = Faults(drop=0.2, dup=0.3, seed=4)
    a, b = f.order(1000, 0), f.order(1000, 0)
    np.testing.assert_array_equal(a, b)  # deterministic per (seed, attempt)
    kept = np.unique(a)
    assert 700 < len(kept) < 900 and len(a) > len(kept) + 150
    first = {}
    for pos, i in enumerate(a):
        first.setdefault(int(i), pos)
    assert list(first) == sorted(first)  # originals in order, copies later
    assert 7 not in Faults(drop_seqs={7}).order(10, 0)
    assert Faults(drop_seqs={7}, attempts=1).order(10, 1) is None
    r = Faults(reorder=True, seed=1).order(500, 0)
    assert sorted(r) == list(range(500)) and list(r) != list(range(500))


@pytest.mark.parametrize("tiles", [False, True], ids=["rows", "tiles"])
def test_duplicated_and_reordered_images(proxy, tiles):
    img = np.ascontiguousarray(np.random.default_rng(3).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    with tensorwire.Client("127.0.0.1", proxy.port, timeout=3.0, retries=0,
                           faults=Faults(dup=0.5, reorder=True, seed=9)) as tw:
        r = tw.infer_image(img, pipeline="small-u8", tiles=tiles)
    n = len(tile_grid(320, 240, 3, 32, 24, True, 1472)) if tiles else 240  # one row per datagram
    assert r.timings.datagrams_sent > 1.3 * n
    np.testing.assert_array_equal(r.outputs["input"][0].transpose(1, 2, 0),
                                  image_reference(img, "RGB8", 32, 24, True))


def test_duplicated_and_reordered_text(proxy):
    with tensorwire.Client("127.0.0.1", proxy.port, timeout=3.0, retries=0,
                           faults=Faults(dup=0.5, reorder=True, seed=2)) as tw:
        r = tw.infer_text(TEXT, pipeline="minilm", overlap=64)
    np.testing.assert_array_equal(r.outputs["input_ids"][0], tokenizer(256, True, False).encode(TEXT).ids)


def test_loss_is_recovered_by_a_retry_with_a_new_id(proxy):
    with tensorwire.Client("127.0.0.1", proxy.port, timeout=3.0, retries=1,
                           faults=Faults(drop=0.2, seed=5, attempts=1)) as tw:
        r = tw.infer_text(TEXT, pipeline="minilm", overlap=0)
    assert r.timings.attempts == 2
    np.testing.assert_array_equal(r.outputs["input_ids"][0], tokenizer(256, True, False).encode(TEXT).ids)


def test_loss_on_every_attempt_raises_incomplete_after_the_retries(proxy):
    with tensorwire.Client("127.0.0.1", proxy.port, timeout=3.0, retries=2,
                           faults=Faults(drop_seqs={1})) as tw:
        tw.describe()
        t0 = time.monotonic()
        with pytest.raises(tensorwire.Incomplete):
            tw.infer_text(TEXT, pipeline="minilm")
        assert time.monotonic() - t0 >= 3 * 0.25  # three attempts, each waited out


@pytest.mark.parametrize("async_", [False, True], ids=["sync", "async"])
def test_no_answer_is_retried_with_a_new_request_id(async_):
    import asyncio
    fake = FakeProxy(validation=False, ignore_first=1)
    try:
        if async_:
            async def run():
                async with tensorwire.AsyncClient("127.0.0.1", fake.port, timeout=0.3, retries=1) as tw:
                    return await tw.infer_text("hello", pipeline="echo-text")
            r = asyncio.run(run())
        else:
            with tensorwire.Client("127.0.0.1", fake.port, timeout=0.3, retries=1) as tw:
                r = tw.infer_text("hello", pipeline="echo-text")
        assert bytes(r.outputs["text"][0]) == b"hello"
        assert len(fake.data_request_ids) == 2 and len(set(fake.data_request_ids)) == 2
        assert r.request_id == fake.data_request_ids[1] and r.timings.attempts == 2
    finally:
        fake.close()


@pytest.mark.parametrize("async_", [False, True], ids=["sync", "async"])
def test_duplicate_reordered_and_stale_replies_are_ignored(async_):
    import asyncio
    fake = FakeProxy(validation=False, dup_replies=True, reorder_replies=True, stale_replies=True)
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(30)]
    try:
        if async_:
            async def run():
                async with tensorwire.AsyncClient("127.0.0.1", fake.port, timeout=2.0) as tw:
                    rs = await asyncio.gather(*(tw.infer_text(t, pipeline="echo-text") for t in texts))
                    return rs, tw.session.ignored
            results, ignored = asyncio.run(run())
        else:
            with tensorwire.Client("127.0.0.1", fake.port, timeout=2.0) as tw:
                results = [tw.infer_text(t, pipeline="echo-text") for t in texts]
                ignored = tw.session.ignored
        for t, r in zip(texts, results):
            assert bytes(r.outputs["text"][0]) == t.encode()
            assert r.timings.attempts == 1
        assert ignored >= 3 * len(texts)  # the stale ones (duplicates are absorbed by the assembly)
    finally:
        fake.close()
