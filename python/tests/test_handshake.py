"""Address validation (spec revision 3, "Address validation").

Parametrized over two proxies:

* ``fake``: tests/fake_proxy.py, a Python rev-3 proxy that enforces the 3x
  budget, answers RETRY and checks HELLO/TOKEN (and the PSK HMAC) exactly
  as the spec says; it also records what it received;
* ``real``: the tensorwire binary. It runs only when the binary's DESCRIBE
  has ``address_validation`` (revision 3); the binary of this writing
  speaks revision 2, so these cases are skipped with that reason until the
  proxy side lands -- then they must pass unchanged.

PSK cases run against the fake only (the proxy's PSK configuration key is
not fixed yet).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac

import pytest
from conftest import Proxy
from fake_proxy import FakeProxy

import tensorwire
from tensorwire._wire import HELLO_MIN_LEN, hello_datagram

REAL_CONFIG = """
[[pipelines]]
id = 2
name = "echo-text"
kind = "text"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"
"""


class Target:
    def __init__(self, kind, port, fake=None):
        self.kind, self.port, self.fake = kind, port, fake

    def check_text(self, r, text: str) -> None:
        if self.fake:
            assert bytes(r.outputs["text"][0]) == text.encode()
        else:
            assert r.outputs["input_ids"].shape[0] == 1


@pytest.fixture(params=["fake", "real"])
def target(request, tmp_path):
    if request.param == "fake":
        fake = FakeProxy()
        yield Target("fake", fake.port, fake)
        assert fake.budget_violations == 0
        fake.close()
    else:
        p = Proxy(REAL_CONFIG, tmp_path, "rev3")
        try:
            if not p.rev3:
                pytest.skip("the proxy binary speaks revision 2 (DESCRIBE has no address_validation)")
            if not p.description["address_validation"]:
                pytest.skip("address validation is off in the proxy")
            yield Target("real", p.port)
        finally:
            p.stop()


def test_hello_layout():
    d = hello_datagram(7, b"")
    assert len(d) == HELLO_MIN_LEN and d[3] == 0x05 and d[24:26] == b"\x00\x00" and not any(d[26:])
    tok, psk = b"T" * 24, b"secret"
    d = hello_datagram(8, tok, psk)
    assert d[24:26] == b"\x00\x18" and d[26:50] == tok
    assert d[50:82] == hmac.new(psk, tok, hashlib.sha256).digest() and not any(d[82:])
    assert hello_datagram(8, tok)[50:] == bytes(len(hello_datagram(8, tok)) - 50)


def test_first_contact_gets_retry_then_validates(target):
    with tensorwire.Client("127.0.0.1", target.port, timeout=1.0, retries=1) as tw:
        assert not tw.validated
        d = tw.describe()
        assert d.address_validation and tw.validated and tw.handshakes == 1
        target.check_text(tw.infer_text("hello there", pipeline="echo-text"), "hello there")
        assert tw.handshakes == 1
    if target.fake:
        f = target.fake
        assert f.retries_sent == 1  # the first DESCRIBE was over budget
        assert [t for _, t in f.hellos][:1] == [0] and f.hellos[0][0] >= 1200
        assert len(f.hellos) == 2 and f.hellos[1][1] > 0


def test_validation_lost_on_the_proxy_is_redone_on_retry(target):
    with tensorwire.Client("127.0.0.1", target.port, timeout=1.0, retries=0) as tw:
        tw.describe()
        if not target.fake:
            pytest.skip("cannot make the real proxy forget one address")
        target.fake.forget()
        r = tw.infer_text("x" * 3000, pipeline="echo-text")
        target.check_text(r, "x" * 3000)
        assert tw.handshakes == 2 and r.timings.attempts == 2


def test_handshake_before_first_request_when_describe_says_so():
    fake = FakeProxy(exempt_describe=True)
    try:
        with tensorwire.Client("127.0.0.1", fake.port, timeout=1.0) as tw:
            tw.describe()
            assert not tw.validated and fake.hellos == []  # lazy: nothing yet
            r = tw.infer_text("abc" * 500, pipeline="echo-text")
            assert bytes(r.outputs["text"][0]) == b"abc" * 500
        assert fake.retries_sent == 0 and len(fake.hellos) == 2 and fake.budget_violations == 0
    finally:
        fake.close()


def test_no_handshake_when_the_proxy_does_not_validate(proxy):
    with tensorwire.Client("127.0.0.1", proxy.port, timeout=2.0) as tw:
        d = tw.describe()
        tw.infer_text("hi", pipeline="minilm")
        assert tw.handshakes == int(d.address_validation) and tw.validated == d.address_validation


def test_psk_right_wrong_and_missing():
    fake = FakeProxy(psk=b"k" * 32)
    try:
        with tensorwire.Client("127.0.0.1", fake.port, timeout=1.0, psk=b"k" * 32) as tw:
            assert bytes(tw.infer_text("ok", pipeline="echo-text").outputs["text"][0]) == b"ok"
            assert tw.validated
        for psk in (b"wrong", None):
            with tensorwire.Client("127.0.0.1", fake.port, timeout=1.0, psk=psk) as tw:
                with pytest.raises(tensorwire.Retry, match="did not accept"):
                    tw.describe()
                assert not tw.validated
        assert fake.budget_violations == 0
    finally:
        fake.close()


def test_async_client_validates_once_for_many_requests(target):
    async def run():
        async with tensorwire.AsyncClient("127.0.0.1", target.port, timeout=1.0, retries=1) as tw:
            texts = [f"t{i} " * (i + 1) for i in range(40)]
            rs = await asyncio.gather(*(tw.infer_text(t, pipeline="echo-text") for t in texts))
            for t, r in zip(texts, rs):
                target.check_text(r, t)
            return tw.validated, tw.handshakes
    validated, n = asyncio.run(run())
    assert validated and n == 1
    if target.fake:
        assert len(target.fake.hellos) == 2


def test_rev2_proxy_answers_hello_with_an_error(proxy):
    if proxy.rev3:
        pytest.skip("the proxy speaks revision 3")
    with tensorwire.Client("127.0.0.1", proxy.port, timeout=1.0) as tw:
        with pytest.raises(tensorwire.TensorwireError) as e:
            tw.handshake()
        assert e.value.code is not None, e.value  # the proxy's ERROR, not a timeout
        assert not tw.validated


def test_ipv6():
    fake = FakeProxy(host="::1")
    try:
        with tensorwire.Client("::1", fake.port, timeout=1.0) as tw:
            text = "über IPv6 " * 400  # several datagrams through sendmmsg
            assert bytes(tw.infer_text(text, pipeline="echo-text").outputs["text"][0]) == text.encode()
            assert tw.validated and tw.handshakes == 1
    finally:
        fake.close()
