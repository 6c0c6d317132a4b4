#!/usr/bin/env bash
# Makes .venv-triton: the real Triton Inference Server (PyPI's
# nvidia-pytriton ships the tritonserver binary and its Python backend),
# tritonclient and the preprocessing libraries of the Python baselines,
# pinned in testdata/triton/requirements.txt. Used by `make
# testenv-triton` (so by `make test`), tests/upstream_triton.rs and
# bench/baselines/.
#
# The virtualenv must come from Debian's /usr/bin/python3.11: the
# Python backend's stub (pytriton/tritonserver/python_backend_stubs/3.11)
# is linked against libpython3.11.so.1.0 and runs models with the
# `python3` first on PATH; a venv of another 3.11 build (pyenv's, say)
# fails in the stub with "'_thread.RLock' object has no attribute
# '_recursion_count'". So this script installs python3.11, its venv
# module and libpython3.11 from Debian when they are missing (as root),
# whatever `python3` is first on PATH.
#
# perf_analyzer (Triton's load generator, for cross-checking the
# benchmark): PyPI's perf-analyzer wheels (2.58+) are manylinux_2_38 and
# need glibc 2.38 / GLIBCXX_3.4.32, more than Debian 12 has, so it comes
# from the last tritonclient wheel of the server's release (2.51.0,
# built on Ubuntu 22.04), which still carried bin/perf_analyzer. It is
# installed apart (--target, no deps: our tritonclient stays 2.73.0)
# with its two missing libraries linked to the copies pytriton bundles
# (libb64, libcudart: loaded, never used without a GPU), and run through
# the wrapper .venv-triton/bin/perf_analyzer.
#
# Idempotent: does nothing when .venv-triton was made from the current
# requirements and this script (the stamp file holds their checksum).
# Prints how long the install took and the virtualenv's size: 74 s and
# 473 MB from an empty pip cache (about 130 MB of wheels, 55 MB of them
# nvidia-pytriton), on the 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3.11
VENV=.venv-triton
REQ=testdata/triton/requirements.txt
STAMP=$VENV/.installed
PERF_ANALYZER_FROM=tritonclient==2.51.0
want=$(cat "$REQ" scripts/triton-env.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

need=()
[ -x "$PY" ] || need+=(python3.11)
"$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3.11-venv)
dpkg-query -W -f='${Status}' libpython3.11 2>/dev/null | grep -q "install ok installed" || need+=(libpython3.11)
if [ ${#need[@]} -gt 0 ]; then
  echo "triton-env: installing ${need[*]} (Debian)" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "triton-env: need root for apt-get install ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine may have no package lists yet.
  apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || {
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
  }
fi

t0=$(date +%s)
# A half-made or outdated venv is remade from scratch (a pin that went
# down would otherwise leave newer packages behind).
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
# The server must be where serve.py looks for it.
"$VENV/bin/python" testdata/triton/serve.py --print-cmd >/dev/null

PA=$VENV/perf-analyzer
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --target "$PA" "$PERF_ANALYZER_FROM"
LIBS=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia_pytriton.libs
mkdir -p "$PA/lib"
ln -sf "$(ls "$LIBS"/libb64-*.so.0d)" "$PA/lib/libb64.so.0d"
ln -sf "$(ls "$LIBS"/libcudart-*.so.12*)" "$PA/lib/libcudart.so.12"
cat >"$VENV/bin/perf_analyzer" <<WRAP
#!/bin/sh
# Triton's perf_analyzer from $PERF_ANALYZER_FROM (scripts/triton-env.sh says why).
LD_LIBRARY_PATH="$(pwd)/$PA/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$(pwd)/$PA/bin/perf_analyzer" "\$@"
WRAP
chmod +x "$VENV/bin/perf_analyzer"
"$VENV/bin/perf_analyzer" --version >/dev/null 2>&1 || {
  echo "triton-env: $VENV/bin/perf_analyzer does not run:" >&2
  "$VENV/bin/perf_analyzer" --version >&2
  exit 1
}
echo "$want" >"$STAMP"
echo "triton-env: $VENV ready in $(($(date +%s) - t0)) s, $(du -sh "$VENV" | cut -f1)" >&2
