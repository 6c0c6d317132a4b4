"""A small TWP/1 revision-3 proxy in Python, for the client's address
validation and reply-handling tests (the real proxy speaks revision 2 as of
this writing). It implements, as PROTOCOL.md says:

* DESCRIBE (``address_validation: true``), one text pipeline (id 2,
  "echo-text") answering the reassembled text as a KServe v2 binary UINT8
  tensor ``text`` cut into small reply fragments;
* the anti-amplification budget: until an address is validated, at most
  3x the UDP payload bytes received from it are sent to it; a request whose
  answer would exceed that gets ERROR RETRY (decided at its first fragment);
* HELLO/TOKEN: a HELLO with token_len 0 must be >= 1200 bytes (else
  MALFORMED) and gets TOKEN validated=0 with a stateless token
  (expiry + HMAC of address and expiry under a secret); a HELLO carrying a
  genuine, unexpired token bound to the sender gets TOKEN validated=1
  (with ``psk``: only if HMAC-SHA256(psk, token) follows the token).

Knobs make it misbehave the way a network or a buggy peer could: duplicate
and reorder reply fragments, send stale replies first, ignore the first N
data requests, forget validations.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import struct
import threading
import time
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

HDR = struct.Struct(">HBBHHQII")
MAGIC = 0x5457


def header(kind: int, pipeline: int, rid: int, seq: int = 0, count: int = 1) -> bytes:
    return HDR.pack(MAGIC, 1, kind, 1 if seq == count - 1 else 0, pipeline, rid, seq, count)


class FakeProxy:
    def __init__(self, psk: Optional[bytes] = None, lifetime_s: int = 30, validation: bool = True,
                 exempt_describe: bool = False, reply_chunk: int = 64, dup_replies: bool = False,
                 reorder_replies: bool = False, stale_replies: bool = False, ignore_first: int = 0,
                 host: str = "127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.psk, self.lifetime_s, self.validation = psk, lifetime_s, validation
        self.exempt_describe, self.reply_chunk = exempt_describe, reply_chunk
        self.dup_replies, self.reorder_replies, self.stale_replies = dup_replies, reorder_replies, stale_replies
        self.ignore_first = ignore_first
        self.secret = os.urandom(32)
        self.received: Dict[Tuple, int] = defaultdict(int)
        self.sent: Dict[Tuple, int] = defaultdict(int)
        self.validated: Dict[Tuple, float] = {}
        self.hellos: List[Tuple[int, int]] = []  # (UDP payload length, token_len)
        self.retries_sent = 0
        self.budget_violations = 0
        self.data_request_ids: List[int] = []
        self.requests: Dict[Tuple, dict] = {}
        self.answered: set = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------
    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def forget(self) -> None:
        """Forgets every validated address and its byte counts (as after a restart)."""
        self.validated.clear()
        self.received.clear()
        self.sent.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                d, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.received[addr] += len(d)
            try:
                self._handle(d, addr)
            except Exception as e:  # a bug here must show in the test
                print("fake proxy:", repr(e))
                raise

    def _is_validated(self, addr) -> bool:
        return not self.validation or self.validated.get(addr, 0) > time.monotonic()

    def _send(self, addr, d: bytes, budgeted: bool = True) -> None:
        if budgeted and not self._is_validated(addr) and self.sent[addr] + len(d) > 3 * self.received[addr]:
            self.budget_violations += 1
        self.sent[addr] += len(d)
        self.sock.sendto(d, addr)

    def _error(self, addr, rid: int, pipeline: int, code: int, msg: str) -> None:
        self._send(addr, header(0x82, pipeline, rid) + struct.pack(">HH", code, 0) + msg.encode())

    def _fits_budget(self, addr, answer_len: int) -> bool:
        return self._is_validated(addr) or self.sent[addr] + answer_len <= 3 * self.received[addr]

    def _token(self, addr) -> bytes:
        expiry = int(time.time()) + self.lifetime_s
        msg = f"{addr[0]}|{addr[1]}|{expiry}".encode()
        return struct.pack(">Q", expiry) + hmac.new(self.secret, msg, hashlib.sha256).digest()[:16]

    def _token_ok(self, addr, token: bytes) -> bool:
        if len(token) != 24:
            return False
        expiry = struct.unpack(">Q", token[:8])[0]
        msg = f"{addr[0]}|{addr[1]}|{expiry}".encode()
        mac = hmac.new(self.secret, msg, hashlib.sha256).digest()[:16]
        return hmac.compare_digest(mac, token[8:]) and expiry >= time.time()

    def _token_reply(self, addr, rid: int, validated: bool, token: bytes) -> None:
        self._send(addr, header(0x83, 0, rid) + struct.pack(">HBBI", len(token), int(validated), 0,
                                                             self.lifetime_s) + token)

    def _response_datagrams(self, rid: int, pipeline: int, body: bytes, ct: int, hl: int) -> List[bytes]:
        chunks = [body[i:i + self.reply_chunk] for i in range(0, len(body), self.reply_chunk)] or [b""]
        n = len(chunks)
        return [header(0x81, pipeline, rid, i, n) + struct.pack(">HHIII", 0, ct, len(body), i * self.reply_chunk, hl) + c
                for i, c in enumerate(chunks)]

    # ------------------------------------------------------------------
    def _handle(self, d: bytes, addr) -> None:
        if len(d) < 24:
            return
        magic, ver, kind, _, pipeline, rid, seq, count = HDR.unpack_from(d)
        if magic != MAGIC:
            return
        if ver != 1:
            return self._error(addr, rid, pipeline, 2, "unsupported version")
        if kind == 0x05:
            return self._hello(d, addr, rid)
        if kind == 0x04:
            body = json.dumps(self.describe_doc()).encode()
            out = self._response_datagrams(rid, 0, body, 1, 0)
            if not self.exempt_describe and not self._fits_budget(addr, sum(map(len, out))):
                self.retries_sent += 1
                return self._error(addr, rid, 0, 11, "address not validated: send HELLO")
            for x in out:
                self._send(addr, x, budgeted=not self.exempt_describe)
            return
        if kind != 0x03:
            return self._error(addr, rid, pipeline, 1, "unknown datagram kind")
        if pipeline != 2:
            return self._error(addr, rid, pipeline, 3, "unknown pipeline")
        key = (addr, rid)
        if key in self.answered:
            return
        offset, total, _ = struct.unpack_from(">III", d, 24)
        req = self.requests.get(key)
        if req is None:
            if self.ignore_first > 0:
                self.ignore_first -= 1
                self.answered.add(key)
                self.data_request_ids.append(rid)
                return
            self.data_request_ids.append(rid)
            # The answer's size follows from total_len: decide now.
            answer = len(self._echo_body(bytes(total))[0]) + 40 * (total // self.reply_chunk + 2)
            if not self._fits_budget(addr, answer):
                self.retries_sent += 1
                self.answered.add(key)
                return self._error(addr, rid, pipeline, 11, "address not validated: send HELLO")
            req = self.requests[key] = {"count": count, "seqs": set(), "buf": bytearray(total)}
        if seq in req["seqs"]:
            return
        req["seqs"].add(seq)
        chunk = d[36:]
        req["buf"][offset:offset + len(chunk)] = chunk
        if len(req["seqs"]) < req["count"]:
            return
        del self.requests[key]
        self.answered.add(key)
        body, hl = self._echo_body(bytes(req["buf"]))
        out = self._response_datagrams(rid, pipeline, body, 2, hl)
        if self.stale_replies:  # a reply to an older id, an ERROR for another id
            for x in self._response_datagrams(rid ^ 0x5A5A, pipeline, b"stale" * 20, 2, 0)[:2]:
                self._send(addr, x)
            self._error(addr, rid + 10**6, pipeline, 6, "not yours")
        if self.reorder_replies:
            out = out[::-1]
        for x in out:
            self._send(addr, x)
            if self.dup_replies:
                self._send(addr, x)

    @staticmethod
    def _echo_body(text: bytes) -> Tuple[bytes, int]:
        head = json.dumps({"model_name": "fake", "outputs": [
            {"name": "text", "datatype": "UINT8", "shape": [1, len(text)],
             "parameters": {"binary_data_size": len(text)}}]}).encode()
        return head + text, len(head)

    def _hello(self, d: bytes, addr, rid: int) -> None:
        (tlen,) = struct.unpack_from(">H", d, 24)
        self.hellos.append((len(d), tlen))
        if tlen == 0:
            if len(d) < 1200:
                return self._error(addr, rid, 0, 1, "HELLO without token shorter than 1200 bytes")
            return self._token_reply(addr, rid, False, self._token(addr))
        token = d[26:26 + tlen]
        ok = self._token_ok(addr, token)
        if ok and self.psk is not None:
            mac = d[26 + tlen:26 + tlen + 32]
            ok = hmac.compare_digest(mac, hmac.new(self.psk, token, hashlib.sha256).digest())
        if ok:
            self.validated[addr] = time.monotonic() + self.lifetime_s
            return self._token_reply(addr, rid, True, b"")
        return self._token_reply(addr, rid, False, self._token(addr))

    def describe_doc(self) -> dict:
        return {
            "protocol": 1, "max_datagram": 1472, "reassembly_timeout_ms": 250,
            "request_deadline_ms": 10000, "address_validation": self.validation,
            "limits": {"max_fragments": 65536, "max_image_pixels": 16777216, "max_text_bytes": 1048576,
                       "max_requests_in_flight": 1024, "max_bytes_in_flight": 268435456},
            "pipelines": [{"id": 2, "name": "echo-text", "kind": "text", "upstream": "echo",
                           "text": {"tokenizer": "none", "max_length": 0, "truncation": False,
                                    "padding": "none", "outputs": ["text"], "dtype": "UINT8"}}],
        }
