#!/usr/bin/env bash
# Installs what building and testing tensorwire needs on Debian/Ubuntu:
# clang/llvm (the XDP program), libbpf/libelf/zlib headers, m4, pkg-config,
# iproute2 and iputils-ping (network-namespace tests), python3-venv (the
# upstream tests' virtualenv), prometheus (its promtool checks the admin
# endpoint's /metrics in the tests). Does nothing when all are present.
set -euo pipefail

packages=(clang llvm libbpf-dev libelf-dev zlib1g-dev m4 pkg-config iproute2 iputils-ping prometheus)
# `make testenv` needs `python3 -m venv` (with ensurepip): Debian ships it
# separately; a python.org/pyenv build has it already.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  packages+=(python3 python3-venv)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is missing: install a Rust toolchain (rustup, Rust >= 1.85) first" >&2
  exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-deps: need root to run: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
