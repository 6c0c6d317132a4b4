"""A stand-in for vLLM's OpenAI-compatible server (vLLM itself needs a GPU
or a large CPU build and cannot run on the test machines). Standard
library only.

It validates request bodies against vLLM's documented request schema and
answers deterministically so tests can check what arrived:

  POST /v1/completions  CompletionRequest: choices[0].text is
                        "ids:" + the prompt ids joined with ","
  POST /v1/embeddings   EmbeddingCompletionRequest: the embedding is
                        [len(ids), sum(ids), ids[0], ids[-1]]
  GET  /health          200 (vLLM's liveness endpoint)

Schema source: vllm-project/vllm, vllm/entrypoints/openai/protocol.py,
classes CompletionRequest and EmbeddingCompletionRequest (fields, types
and defaults as of vLLM 0.10/0.11). vLLM accepts and ignores unknown
fields with a warning; this server rejects them (400), so a misspelt
parameter fails the test instead of being silently dropped. Errors use
vLLM's ErrorResponse shape: {"error": {"message", "type", "param", "code"}}.

Usage: python openai_server.py --port PORT
"""

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return (isinstance(v, (int, float))) and not isinstance(v, bool)


def opt(check):
    return lambda v: v is None or check(v)


def is_str(v):
    return isinstance(v, str)


def list_of(check):
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


def token_ids(v):
    return list_of(is_int)(v) and all(0 <= x <= INT64_MAX for x in v)


def prompt_type(v):
    # Union[list[int], list[list[int]], str, list[str]]
    return is_str(v) or token_ids(v) or list_of(token_ids)(v) or list_of(is_str)(v)


# CompletionRequest: OpenAI fields, then vLLM's sampling and extra params.
COMPLETION_FIELDS = {
    "model": opt(is_str),
    "prompt": opt(prompt_type),
    "best_of": opt(is_int),
    "echo": opt(lambda v: isinstance(v, bool)),
    "frequency_penalty": opt(is_num),
    "logit_bias": opt(lambda v: isinstance(v, dict) and all(is_num(x) for x in v.values())),
    "logprobs": opt(lambda v: is_int(v) and v >= 0),
    "max_tokens": opt(lambda v: is_int(v) and v >= 1),
    "n": lambda v: is_int(v) and v >= 1,
    "presence_penalty": opt(is_num),
    "seed": opt(lambda v: is_int(v) and INT64_MIN <= v <= INT64_MAX),
    "stop": opt(lambda v: is_str(v) or list_of(is_str)(v)),
    "stream": opt(lambda v: isinstance(v, bool)),
    "stream_options": opt(lambda v: isinstance(v, dict)),
    "suffix": opt(is_str),
    "temperature": opt(is_num),
    "top_p": opt(is_num),
    "user": opt(is_str),
    "use_beam_search": lambda v: isinstance(v, bool),
    "top_k": opt(is_int),
    "min_p": opt(is_num),
    "repetition_penalty": opt(is_num),
    "length_penalty": is_num,
    "stop_token_ids": opt(list_of(is_int)),
    "include_stop_str_in_output": lambda v: isinstance(v, bool),
    "ignore_eos": lambda v: isinstance(v, bool),
    "min_tokens": lambda v: is_int(v) and v >= 0,
    "skip_special_tokens": lambda v: isinstance(v, bool),
    "spaces_between_special_tokens": lambda v: isinstance(v, bool),
    "truncate_prompt_tokens": opt(lambda v: is_int(v) and v >= -1),
    "allowed_token_ids": opt(list_of(is_int)),
    "prompt_logprobs": opt(is_int),
    "add_special_tokens": lambda v: isinstance(v, bool),
    "response_format": opt(lambda v: isinstance(v, dict)),
    "priority": is_int,
    "request_id": is_str,
    "return_tokens_as_token_ids": opt(lambda v: isinstance(v, bool)),
}

EMBEDDING_FIELDS = {
    "model": opt(is_str),
    "input": prompt_type,
    "encoding_format": lambda v: v in ("float", "base64"),
    "dimensions": opt(lambda v: is_int(v) and v >= 1),
    "user": opt(is_str),
    "truncate_prompt_tokens": opt(lambda v: is_int(v) and v >= -1),
    "add_special_tokens": lambda v: isinstance(v, bool),
    "priority": is_int,
    "request_id": is_str,
    "normalize": opt(lambda v: isinstance(v, bool)),
}


def validate(body, fields, required):
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for k in required:
        if k not in body:
            return f"field required: {k}"
    for k, v in body.items():
        if k not in fields:
            return f"unknown field: {k}"
        if not fields[k](v):
            return f"invalid value for {k}: {v!r}"
    if body.get("stream"):
        return "this test server does not stream"
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as vLLM (uvicorn)

    def log_message(self, *args):
        pass

    def answer(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message):
        self.answer(
            status,
            {"error": {"message": message, "type": "BadRequestError", "param": None, "code": status}},
        )

    def do_GET(self):
        if self.path == "/health":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.error(404, f"no route {self.path}")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self.error(400, "Content-Type must be application/json")
        try:
            body = json.loads(raw)
        except ValueError as e:
            return self.error(400, f"invalid JSON: {e}")
        now = int(time.time())
        if self.path == "/v1/completions":
            err = validate(body, COMPLETION_FIELDS, ["prompt"])
            if err:
                return self.error(400, err)
            ids = body["prompt"]
            if not token_ids(ids):
                return self.error(400, "tensorwire sends token ids: prompt must be list[int]")
            max_tokens = body.get("max_tokens", 16)
            self.answer(200, {
                "id": "cmpl-test", "object": "text_completion", "created": now,
                "model": body.get("model"),
                "choices": [{"index": 0, "text": "ids:" + ",".join(map(str, ids)),
                             "logprobs": None, "finish_reason": "length", "stop_reason": None}],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": max_tokens,
                          "total_tokens": len(ids) + max_tokens},
            })
        elif self.path == "/v1/embeddings":
            err = validate(body, EMBEDDING_FIELDS, ["input"])
            if err:
                return self.error(400, err)
            ids = body["input"]
            if not token_ids(ids) or not ids:
                return self.error(400, "tensorwire sends token ids: input must be a non-empty list[int]")
            self.answer(200, {
                "id": "embd-test", "object": "list", "created": now, "model": body.get("model"),
                "data": [{"index": 0, "object": "embedding",
                          "embedding": [float(len(ids)), float(sum(ids)), float(ids[0]), float(ids[-1])]}],
                "usage": {"prompt_tokens": len(ids), "total_tokens": len(ids), "completion_tokens": 0},
            })
        else:
            self.error(404, f"no route {self.path}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()
