"""Starts the real Triton Inference Server (the `tritonserver` binary that
PyPI's nvidia-pytriton ships) on testdata/triton/models, for tensorwire's
upstream_triton tests and the latency benchmark's baselines.

    .venv-triton/bin/python testdata/triton/serve.py --http-port 8000 [--log FILE]

Run it with .venv-triton's interpreter (scripts/triton-env.sh makes it from
Debian's /usr/bin/python3.11): the Python backend's stub is built against
that interpreter, and it finds numpy, Pillow and tokenizers through the
`python3` first on PATH, which we point at the virtualenv.

Where things are (in site-packages of the virtualenv):
  pytriton/tritonserver/bin/tritonserver           the server
  pytriton/tritonserver/backends/python/           libtriton_python.so + utils
  pytriton/tritonserver/python_backend_stubs/3.11/ triton_python_backend_stub
  nvidia_pytriton.libs/                            libtritonserver.so, libcurl...
The binaries find their libraries through RPATH ($ORIGIN/../...); the
stub is not in the backend directory, so we build one next to the
virtualenv (.venv-triton/triton-backends/python: symlinks plus the 3.11
stub) and set LD_LIBRARY_PATH to nvidia_pytriton.libs, because a
symlinked library's $ORIGIN is the link's directory, not the target's.

gRPC, metrics and the other frontends are off; --model-control-mode=none
(every model in the repository is loaded at start, none later). Each
server gets its own shared-memory prefix (the Python backend talks to
its stubs through /dev/shm), so servers on other ports do not collide,
and regions a killed server on this port left behind are removed first.

The server replaces this process (exec): killing this PID kills
tritonserver, and the stubs exit when their parent dies. A forked helper
prints "ready after N s" once /v2/health/ready answers 200 (or "not
ready" after --ready-timeout) and exits.
"""

import argparse
import glob
import os
import sys
import sysconfig
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "models")


def site_packages():
    return sysconfig.get_paths()["purelib"]


def triton_paths():
    sp = site_packages()
    dist = os.path.join(sp, "pytriton", "tritonserver")
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    paths = {
        "server": os.path.join(dist, "bin", "tritonserver"),
        "python_backend": os.path.join(dist, "backends", "python"),
        "stub": os.path.join(dist, "python_backend_stubs", ver, "triton_python_backend_stub"),
        "libs": os.path.join(sp, "nvidia_pytriton.libs"),
    }
    for k, p in paths.items():
        if not os.path.exists(p):
            sys.exit(
                f"serve.py: {k} not found at {p}: is nvidia-pytriton installed in "
                f"{sys.prefix}? (run scripts/triton-env.sh)"
            )
    return paths


def backend_dir(paths):
    """<venv>/triton-backends/python with the backend and our stub (made
    once; idempotent, and safe when several servers start at once)."""
    root = os.path.join(sys.prefix, "triton-backends")
    py = os.path.join(root, "python")
    os.makedirs(py, exist_ok=True)
    for name in os.listdir(paths["python_backend"]):
        link = os.path.join(py, name)
        if not os.path.lexists(link):
            try:
                os.symlink(os.path.join(paths["python_backend"], name), link)
            except FileExistsError:
                pass
    stub = os.path.join(py, "triton_python_backend_stub")
    if not os.path.lexists(stub):
        try:
            os.symlink(paths["stub"], stub)
        except FileExistsError:
            pass
    return root


def wait_ready(port, timeout, t0):
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    parent = os.getppid()
    while time.monotonic() - t0 < timeout:
        if os.getppid() != parent:  # the server died
            break
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    print(f"ready after {time.monotonic() - t0:.2f} s on port {port}", flush=True)
                    return
        except OSError:
            pass
        time.sleep(0.1)
    print(f"not ready after {time.monotonic() - t0:.1f} s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--models", default=MODELS, help="model repository")
    ap.add_argument("--log", help="tritonserver log file (default: stderr)")
    ap.add_argument("--verbose", type=int, default=0, help="--log-verbose level")
    ap.add_argument("--ready-timeout", type=float, default=120)
    ap.add_argument("--print-cmd", action="store_true", help="print the command and env, do not run")
    a = ap.parse_args()

    paths = triton_paths()
    prefix = f"tensorwire_triton_{a.http_port}_"
    cmd = [
        paths["server"],
        f"--model-repository={os.path.abspath(a.models)}",
        "--model-control-mode=none",
        f"--http-port={a.http_port}",
        "--http-address=127.0.0.1",
        "--allow-grpc=false",
        "--allow-metrics=false",
        "--allow-sagemaker=false",
        "--allow-vertex-ai=false",
        f"--backend-directory={backend_dir(paths)}",
        f"--backend-config=python,shm-region-prefix-name={prefix}",
        "--exit-on-error=true",
        "--strict-readiness=true",
        f"--log-verbose={a.verbose}",
    ]
    if a.log:
        cmd.append(f"--log-file={a.log}")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(
        p for p in (paths["libs"], env.get("LD_LIBRARY_PATH")) if p
    )
    # The stub runs the `python3` it finds on PATH's environment: ours.
    env["PATH"] = os.path.join(sys.prefix, "bin") + ":" + env.get("PATH", "")
    # No __pycache__ in the model repository (nor next to head.py).
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if a.print_cmd:
        print("LD_LIBRARY_PATH=" + env["LD_LIBRARY_PATH"])
        print("PATH=" + env["PATH"])
        print(" ".join(cmd))
        return

    for stale in glob.glob(f"/dev/shm/{prefix}*"):
        try:
            os.unlink(stale)
        except OSError:
            pass
    t0 = time.monotonic()
    sys.stdout.flush()
    if os.fork() == 0:
        wait_ready(a.http_port, a.ready_timeout, t0)
        os._exit(0)
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
