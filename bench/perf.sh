#!/usr/bin/env bash
# `make perf`: the whole comparison of docs/BENCHMARKS.md. Starts the real
# Triton (testdata/triton/serve.py from .venv-triton) and a tensorwire
# proxy with a kserve upstream to Triton's `logits` (images, tensor_name
# input__0) and `text_head` (texts), then runs `tensorwire perf
# --baselines` (tensorwire, client_preprocess.py, server_preprocess.py,
# interleaved, ROUNDS rounds) at each offered rate, for 640x480 and
# 1920x1080 RGB images and 1 KB texts. Writes docs/perf/*.json, *.csv,
# *.svg and the tables to docs/perf/*.md.
#
# Environment: BIN (default target/release/tensorwire: the load
# generator), PROXY_BIN (the proxy, default $BIN), TRITON_PYTHON (.venv-triton/bin/python), OUT
# (docs/perf), DURATION (s per point, 10), WARMUP (2), ROUNDS (3),
# RATES_640, RATES_1080, RATES_TEXT (comma lists of requests/s), ONLY
# (image640|image1080|text: one workload).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/tensorwire}
PROXY_BIN=${PROXY_BIN:-$BIN}
PY=${TRITON_PYTHON:-.venv-triton/bin/python}
OUT=${OUT:-docs/perf}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
RATES_640=${RATES_640:-10,25,50,75}
RATES_1080=${RATES_1080:-5,10,20,30}
RATES_TEXT=${RATES_TEXT:-10,25,50,100}
mkdir -p "$OUT"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
TP=$(free_port); UP=$(free_port); AP=$(free_port)
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

"$PY" testdata/triton/serve.py --http-port "$TP" --log "$TMP/triton.log" >"$TMP/serve.out" 2>&1 &
TRITON=$!; PIDS+=("$TRITON")
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$TP/v2/health/ready" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$TP/v2/health/ready" >/dev/null || { echo "Triton not ready"; cat "$TMP/triton.log"; exit 1; }
echo "perf: Triton ready on $TP (pid $TRITON)"

cat >"$TMP/proxy.toml" <<TOML
[ingress]
mode = "socket"
listen = "127.0.0.1:$UP"
workers = 1
[admin]
listen = "127.0.0.1:$AP"
[stats]
log_interval_ms = 0
[upstreams.logits]
kind = "kserve"
url = "http://127.0.0.1:$TP"
model = "logits"
connections = 8
request_timeout_ms = 20000
[upstreams.text_head]
kind = "kserve"
url = "http://127.0.0.1:$TP"
model = "text_head"
connections = 8
request_timeout_ms = 20000
[[pipelines]]
id = 1
name = "resnet"
kind = "image"
upstream = "logits"
[pipelines.image]
width = 224
height = 224
tensor_name = "input__0"
[[pipelines]]
id = 2
name = "minilm"
kind = "text"
upstream = "text_head"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"
max_length = 256
TOML
"$PROXY_BIN" run --config "$TMP/proxy.toml" >"$TMP/proxy.log" 2>&1 &
PROXY=$!; PIDS+=("$PROXY")
sleep 1
echo "perf: proxy on udp $UP (pid $PROXY), admin $AP"

perf() {
  local name=$1; shift
  "$BIN" perf --server "127.0.0.1:$UP" --admin "127.0.0.1:$AP" \
    --proxy-pid "$PROXY" --server-pid "$TRITON" \
    --baselines --triton-url "127.0.0.1:$TP" --python "$PY" \
    --duration "$DURATION" --warmup "$WARMUP" --rounds "$ROUNDS" --workers 16 \
    --name "$name" --json "$OUT/$name.json" --csv "$OUT/$name.csv" --plot "$OUT" "$@" \
    | tee "$OUT/$name.md"
}
case "${ONLY:-all}" in all|image640) perf image-640x480 --pipeline resnet --image-size 640x480 --request-rate "$RATES_640";; esac
case "${ONLY:-all}" in all|image1080) perf image-1920x1080 --pipeline resnet --image-size 1920x1080 --request-rate "$RATES_1080";; esac
case "${ONLY:-all}" in all|text) perf text-1KB --pipeline minilm --text-bytes 1024 --request-rate "$RATES_TEXT";; esac
