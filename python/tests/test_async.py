"""The asyncio client: 200 requests in flight on one socket, each answer
matched to its request and checked against the references."""
from __future__ import annotations

import asyncio

import numpy as np
from conftest import image_reference, tokenizer

import tensorwire


def test_200_requests_in_flight(proxy):
    rng = np.random.default_rng(11)
    images = [np.ascontiguousarray(rng.integers(0, 256, (int(rng.integers(20, 120)), int(rng.integers(20, 160)), 3),
                                                dtype=np.uint8)) for _ in range(100)]
    texts = [f"request {i}: " + "lorem ipsum dolor sit amet " * int(rng.integers(1, 60)) for i in range(100)]
    tok = tokenizer(256, True, False)

    async def run():
        async with tensorwire.AsyncClient("127.0.0.1", proxy.port, timeout=5.0, retries=2) as tw:
            await tw.describe()
            jobs = []
            for i in range(100):
                jobs.append(tw.infer_image(images[i], pipeline="small-u8", tiles=bool(i % 2)))
                jobs.append(tw.infer_text(texts[i], pipeline="minilm", overlap=32))
            peak = 0

            async def watch():
                nonlocal peak
                while True:
                    peak = max(peak, tw.in_flight)
                    await asyncio.sleep(0)
            w = asyncio.ensure_future(watch())
            results = await asyncio.gather(*jobs)
            w.cancel()
            return results, peak

    results, peak = asyncio.run(run())
    assert peak >= 150  # really in flight together, not one after the other
    ids = set()
    for i in range(100):
        img_r, txt_r = results[2 * i], results[2 * i + 1]
        np.testing.assert_array_equal(img_r.outputs["input"][0].transpose(1, 2, 0),
                                      image_reference(images[i], "RGB8", 32, 24, True))
        np.testing.assert_array_equal(txt_r.outputs["input_ids"][0], tok.encode(texts[i]).ids)
        ids.update((img_r.request_id, txt_r.request_id))
    assert len(ids) == 200


def test_async_errors_are_raised_per_request(proxy):
    async def run():
        async with tensorwire.AsyncClient("127.0.0.1", proxy.port, timeout=3.0, retries=0) as tw:
            return await asyncio.gather(tw.infer_text("fine", pipeline="minilm"),
                                        tw.infer_text(b"\xff", pipeline="minilm"),
                                        tw.infer_text("x", pipeline=99), return_exceptions=True)
    ok, bad, unknown = asyncio.run(run())
    assert ok.outputs["input_ids"].shape[0] == 1
    assert isinstance(bad, tensorwire.InvalidContent) and isinstance(unknown, tensorwire.UnknownPipeline)


def test_async_loss_duplication_reordering_and_retry(proxy):
    tok = tokenizer(256, True, False)
    texts = [f"{i} " + "the same words again and again " * 80 for i in range(20)]

    async def run():
        faults = tensorwire.Faults(drop_seqs={1}, dup=0.5, reorder=True, seed=8, attempts=1)
        async with tensorwire.AsyncClient("127.0.0.1", proxy.port, timeout=3.0, retries=1, faults=faults) as tw:
            return await asyncio.gather(*(tw.infer_text(t, pipeline="minilm") for t in texts))
    for t, r in zip(texts, asyncio.run(run())):
        assert r.timings.attempts == 2  # the first lost fragments: INCOMPLETE, then resent whole
        np.testing.assert_array_equal(r.outputs["input_ids"][0], tok.encode(t).ids)
