"""The measurement loop and the JSON contract shared by the Python
baselines of the latency benchmark (client_preprocess.py,
server_preprocess.py); see README.md beside this file.

Each baseline supplies a `Workload`: which model to call and, per request,
the work a client does before sending (preprocessing or not) and the
tritonclient inputs. This module sends them with tritonclient.http
(binary tensors), closed loop (--concurrency threads, each sending its
next request when the previous one is answered) or open loop
(--request-rate R: request i is due at start + i/R, and its latency is
counted from then, so a slow server cannot hide its queueing), and
reports latencies in microseconds and this process's CPU time.
"""

import argparse
import glob
import json
import os
import resource
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# The preprocessing and the tokenizer settings live with the Triton
# models (testdata/triton/head.py) so the client-side baseline does
# exactly what the server-side models do.
sys.path.insert(0, os.path.join(REPO, "testdata", "triton"))
import head  # noqa: E402

SCHEMA = "tensorwire.baseline/1"


def parse_args(description, default_image_model, default_text_model):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--url", default="127.0.0.1:8000",
                    help="Triton HTTP endpoint, host:port (an http:// prefix is allowed)")
    ap.add_argument("--mode", choices=["image", "text"], default="image")
    ap.add_argument("--model", help=f"model to call (default: {default_image_model} for images, "
                    f"{default_text_model} for texts)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--images", help="directory of .png/.jpg/.jpeg files, used in turn")
    src.add_argument("--image-size", default="640x480",
                     help="WxH of a synthetic image (seeded noise) when --images is not given")
    ap.add_argument("--texts", nargs="+",
                    default=[os.path.join(REPO, "testdata", "text", "zen-of-python.txt")],
                    help="text files, used in turn (--mode text)")
    stop = ap.add_mutually_exclusive_group()
    stop.add_argument("--requests", type=int, help="number of measured requests (default 200)")
    stop.add_argument("--duration", type=float, help="seconds of measured requests")
    ap.add_argument("--warmup", type=int, default=10, help="unmeasured requests first")
    ap.add_argument("--concurrency", type=int, default=1, help="client threads (connections)")
    ap.add_argument("--request-rate", type=float,
                    help="open loop: requests per second (latency from each request's due time)")
    ap.add_argument("--server-pid", type=int,
                    help="also report the CPU time of this process and its descendants "
                         "(tritonserver and its Python backend stubs) during the run")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    ap.add_argument("--per-request", action="store_true",
                    help="with --json: also one JSON line per request, before the summary")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.requests is None and a.duration is None:
        a.requests = 200
    if a.model is None:
        a.model = default_image_model if a.mode == "image" else default_text_model
    a.url = a.url.removeprefix("http://").rstrip("/")
    return a


def load_images(a):
    """RGB uint8 HWC arrays, decoded once before the run (tensorwire's
    client sends decoded pixels too: decoding is not part of the
    comparison)."""
    from PIL import Image

    if a.images:
        files = sorted(
            f for ext in ("png", "jpg", "jpeg")
            for f in glob.glob(os.path.join(a.images, f"*.{ext}"))
        )
        if not files:
            sys.exit(f"no .png/.jpg images in {a.images}")
        return [(os.path.basename(f), np.asarray(Image.open(f).convert("RGB"))) for f in files]
    w, h = (int(v) for v in a.image_size.lower().split("x"))
    rng = np.random.default_rng(a.seed)
    return [(f"synthetic-{w}x{h}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))]


def load_texts(a):
    return [(os.path.basename(f), open(f, encoding="utf-8").read()) for f in a.texts]


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _tree_cpu_seconds(root):
    """utime + stime (s) of `root` and its descendants, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2:].split()
        parent[int(d)] = int(fields[1])
        cpu[int(d)] = (int(fields[11]) + int(fields[12])) / tick
    total = 0.0
    for pid in cpu:
        p = pid
        while p and p != root:
            p = parent.get(p, 0)
        if p == root:
            total += cpu[pid]
    return total


class Workload:
    """What one baseline does per request: `request(i)` returns
    (inputs, outputs) for tritonclient, doing the client-side work."""

    name = "?"

    def request(self, i):
        raise NotImplementedError


def run(a, workload):
    import tritonclient.http as httpclient

    n_threads = max(1, a.concurrency)
    probe = httpclient.InferenceServerClient(a.url, connection_timeout=60, network_timeout=60)
    if not probe.is_model_ready(a.model):
        sys.exit(f"model {a.model} is not ready at {a.url}")
    probe.close()

    lock = threading.Lock()
    records = []  # (index, latency_us, ok, error)
    next_i = [0]

    def take():
        with lock:
            i = next_i[0]
            if a.requests is not None and i >= a.requests:
                return None
            due = t_start + i / a.request_rate if a.request_rate else None
            if deadline and (due or time.perf_counter()) >= deadline:
                return None
            next_i[0] += 1
            return i, due

    # tritonclient.http runs on gevent: a client must stay on the thread
    # that made it. Each worker makes its own (one keep-alive connection),
    # warms up, then all start together.
    ready = threading.Barrier(n_threads + 1)
    go = threading.Event()

    def worker(k):
        client = httpclient.InferenceServerClient(a.url, connection_timeout=60,
                                                  network_timeout=60)
        for i in range(k, a.warmup, n_threads):
            inputs, outputs = workload.request(i)
            client.infer(a.model, inputs, outputs=outputs)
        ready.wait()
        go.wait()
        while True:
            job = take()
            if job is None:
                return
            i, due = job
            if due is not None:
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                t0 = due
            else:
                t0 = time.perf_counter()
            ok, err = True, None
            try:
                inputs, outputs = workload.request(i)
                r = client.infer(a.model, inputs, outputs=outputs)
                for o in outputs:
                    r.as_numpy(o.name())
            except Exception as e:  # reported, the run goes on
                ok, err = False, str(e)[:200]
            lat = (time.perf_counter() - t0) * 1e6
            with lock:
                records.append((i, lat, ok, err))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    ready.wait()
    server0 = _tree_cpu_seconds(a.server_pid) if a.server_pid else None
    u0, s0 = cpu_seconds()
    # (take() and worker() read these two when they run.)
    t_start = time.perf_counter()
    deadline = t_start + a.duration if a.duration else None
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    u1, s1 = cpu_seconds()
    server1 = _tree_cpu_seconds(a.server_pid) if a.server_pid else None

    records.sort()
    lats = np.array([r[1] for r in records if r[2]], dtype=np.float64)
    n = len(records)
    errors = [r for r in records if not r[2]]
    cpu = (u1 - u0) + (s1 - s0)
    pct = lambda q: round(float(np.percentile(lats, q)), 1) if len(lats) else None  # noqa: E731
    summary = {
        "schema": SCHEMA,
        "type": "summary",
        "baseline": workload.name,
        "mode": a.mode,
        "model": a.model,
        "url": a.url,
        "inputs": workload.describe(),
        "concurrency": n_threads,
        "request_rate": a.request_rate,
        "loop": "open" if a.request_rate else "closed",
        "requests": n,
        "ok": int(len(lats)),
        "errors": len(errors),
        "first_error": errors[0][3] if errors else None,
        "wall_s": round(wall, 4),
        "throughput_rps": round(n / wall, 2) if wall > 0 else None,
        "latency_us": {
            "mean": round(float(lats.mean()), 1) if len(lats) else None,
            "p50": pct(50), "p90": pct(90), "p99": pct(99),
            "min": round(float(lats.min()), 1) if len(lats) else None,
            "max": round(float(lats.max()), 1) if len(lats) else None,
        },
        "client_cpu_s": {"user": round(u1 - u0, 4), "system": round(s1 - s0, 4),
                         "total": round(cpu, 4)},
        "client_cpu_us_per_request": round(cpu * 1e6 / n, 1) if n else None,
        "server_cpu_s": round(server1 - server0, 4) if a.server_pid else None,
        "server_cpu_us_per_request": (round((server1 - server0) * 1e6 / n, 1)
                                      if a.server_pid and n else None),
        "latencies_us": [round(r[1], 1) for r in records],
    }
    if a.json:
        if a.per_request:
            for i, lat, ok, err in records:
                print(json.dumps({"schema": SCHEMA, "type": "request", "i": i,
                                  "latency_us": round(lat, 1), "ok": ok, "error": err}))
        print(json.dumps(summary))
    else:
        L = summary["latency_us"]
        print(f"{workload.name} -> {a.model} at {a.url}: {n} requests ({len(errors)} errors) "
              f"in {wall:.2f} s, {summary['throughput_rps']} req/s, {summary['loop']} loop, "
              f"concurrency {n_threads}")
        print(f"  latency us: p50 {L['p50']}  p90 {L['p90']}  p99 {L['p99']}  mean {L['mean']}")
        print(f"  client CPU: {cpu:.3f} s ({summary['client_cpu_us_per_request']} us/request)")
        if a.server_pid:
            print(f"  server CPU: {summary['server_cpu_s']} s "
                  f"({summary['server_cpu_us_per_request']} us/request)")
        if errors:
            print(f"  first error: {errors[0][3]}")
    return 1 if errors else 0
