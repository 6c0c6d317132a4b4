#!/usr/bin/env bash
# Proves the capability recipe against the real binary (root only): in two
# private network namespaces joined by a veth pair, `tensorwire run` is
# started as a non-root uid with exactly the systemd unit's
# AmbientCapabilities (no_new_privs set, RLIMIT_MEMLOCK 64 KiB, as in many
# containers) and must answer a text over AF_XDP; then once per capability
# with that one left out, and must fail; as uid 0 with only those in its
# bounding set (how Docker and Kubernetes grant them), and must answer; and
# with the socket ingress and no capability at all, and must answer. The namespaces are always removed.
# Usage: deploy/verify-capabilities.sh BINARY     (scripts/check-deploy.sh
# calls it when it runs as root with a built binary.)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=$(readlink -f "${1:?usage: $0 path/to/tensorwire}")
UNIT=deploy/systemd/tensorwire.service
[ "$(id -u)" -eq 0 ] || { echo "verify-capabilities: needs root (network namespaces)" >&2; exit 1; }
for t in ip setpriv; do
  command -v "$t" >/dev/null || { echo "verify-capabilities: $t missing (iproute2, util-linux)" >&2; exit 1; }
done

# CAP_NET_ADMIN CAP_BPF ... -> net_admin bpf ... (setpriv's names)
read -r -a CAPS <<<"$(sed -n 's/^AmbientCapabilities=//p' "$UNIT" | tr 'A-Z' 'a-z' | sed 's/cap_//g')"
[ ${#CAPS[@]} -gt 0 ] || { echo "verify-capabilities: no AmbientCapabilities in $UNIT" >&2; exit 1; }

NS_P=twcap$$p NS_C=twcap$$c
WORK=$(mktemp -d)
PID=
cleanup() {
  ip netns pids "$NS_P" 2>/dev/null | xargs -r kill 2>/dev/null || true
  [ -z "$PID" ] || kill "$PID" 2>/dev/null || true
  ip netns del "$NS_P" 2>/dev/null || true
  ip netns del "$NS_C" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS_P"
ip netns add "$NS_C"
ip link add vp$$ netns "$NS_P" type veth peer name vc$$ netns "$NS_C"
ip -n "$NS_P" addr add 10.213.0.1/24 dev vp$$
ip -n "$NS_C" addr add 10.213.0.2/24 dev vc$$
for ns in "$NS_P" "$NS_C"; do ip -n "$ns" link set lo up; done
ip -n "$NS_P" link set vp$$ up
ip -n "$NS_C" link set vc$$ up
echo "a text sent through the capability check" >"$WORK/text.txt"
chmod 0755 "$WORK"; chmod 0644 "$WORK/text.txt"

# start MODE CAPLIST [root]: the proxy in NS_P as uid 10001 with exactly
# CAPLIST (ambient, as systemd gives them), or as uid 0 with CAPLIST as its
# bounding set (as a container runtime gives them to uid 0).
start() {
  local mode=$1 caps=$2 set=-all
  [ -z "$caps" ] || set="-all,$(echo "$caps" | sed 's/\([a-z_]\+\)/+\1/g')"
  local who=(--reuid 10001 --regid 10001 --clear-groups --inh-caps "$set" --ambient-caps "$set")
  [ "${3:-}" != root ] || who=(--inh-caps -all)
  ( ulimit -l 64
    exec ip netns exec "$NS_P" env TENSORWIRE__INGRESS__MODE="$mode" \
      TENSORWIRE__INGRESS__INTERFACE=vp$$ TENSORWIRE__INGRESS__LISTEN=0.0.0.0:7878 \
      TENSORWIRE__ADMIN__LISTEN=10.213.0.1:9878 TENSORWIRE__STATS__LOG_INTERVAL_MS=0 \
      ${TRACE:+strace -f -qq -o "$WORK/trace.$mode"} \
      setpriv "${who[@]}" --no-new-privs --bounding-set "$set" \
        -- "$BIN" run ) >"$WORK/log" 2>&1 &
  PID=$!
}
# Every process in NS_P is one of ours (the namespace is private to this
# run): the proxy, and strace/setpriv wrappers when tracing.
stop() {
  ip netns pids "$NS_P" 2>/dev/null | xargs -r kill 2>/dev/null || true
  [ -z "$PID" ] || wait "$PID" 2>/dev/null || true
  PID=
}

# serves: a text comes back within 20 s while the proxy runs.
serves() {
  for _ in $(seq 20); do
    kill -0 "$PID" 2>/dev/null || return 1
    if ip netns exec "$NS_C" timeout 5 "$BIN" send-text "$WORK/text.txt" \
         --server 10.213.0.1:7878 >"$WORK/send" 2>&1; then return 0; fi
    sleep 1
  done
  return 1
}
# fails: the proxy exits non-zero within 20 s without having served.
fails() {
  for _ in $(seq 40); do
    if ! kill -0 "$PID" 2>/dev/null; then
      if wait "$PID"; then PID=; return 1; fi
      PID=; return 0
    fi
    sleep 0.5
  done
  return 1
}

errors=0
all=$(IFS=,; echo "${CAPS[*]}")
# With strace, the serving runs also record every system call and socket
# family, checked below against the unit's SystemCallFilter= and
# RestrictAddressFamilies=.
TRACE=$(command -v strace >/dev/null && echo 1 || true)
start xdp "$all"
if serves; then
  echo "verify-capabilities: AF_XDP as uid 10001 with exactly {$all}: serves ($(grep -o 'copy mode\|zero-copy mode\|zerocopy' "$WORK/log" | head -1))"
else
  echo "verify-capabilities: FAIL AF_XDP as uid 10001 with {$all} does not serve:" >&2
  tail -5 "$WORK/log" >&2; errors=$((errors + 1))
fi
stop
for c in "${CAPS[@]}"; do
  rest=$(printf '%s\n' "${CAPS[@]}" | grep -vx "$c" | paste -sd,)
  start xdp "$rest"
  if fails; then
    echo "verify-capabilities: without $c: refused ($(grep -o 'error: .*' "$WORK/log" | tail -1 | cut -c1-110))"
  else
    echo "verify-capabilities: FAIL without $c the AF_XDP proxy still runs: $c is not needed" >&2
    errors=$((errors + 1))
  fi
  stop
done
TRACE=
start xdp "$all" root
if serves; then
  echo "verify-capabilities: AF_XDP as uid 0 with only {$all} in its bounding set (the container recipe): serves"
else
  echo "verify-capabilities: FAIL AF_XDP as uid 0 with {$all} does not serve:" >&2
  tail -5 "$WORK/log" >&2; errors=$((errors + 1))
fi
stop
TRACE=$(command -v strace >/dev/null && echo 1 || true)
start socket ""
if serves; then
  echo "verify-capabilities: socket ingress as uid 10001 with no capability: serves"
else
  echo "verify-capabilities: FAIL the socket ingress without capabilities does not serve:" >&2
  tail -5 "$WORK/log" >&2; errors=$((errors + 1))
fi
stop

# The unit's sandbox against what the binary did (tracing the setpriv and
# ip wrappers too, whose calls are a subset of the same groups).
if ls "$WORK"/trace.* >/dev/null 2>&1; then
  if python3 - "$UNIT" "$WORK"/trace.* <<'PY'
import re, subprocess, sys
unit = open(sys.argv[1]).read()
def key(k):
    return " ".join(re.findall(rf"^{k}=(.*)$", unit, re.M)).split()
def expand(name):
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True).stdout
    res = set()
    for line in out.splitlines()[1:]:
        line = line.strip()
        if line and not line.startswith("#"):
            res |= expand(line) if line.startswith("@") else {line}
    return res
allowed = set()
for item in key("SystemCallFilter"):
    allowed |= expand(item) if item.startswith("@") else {item}
families = set(key("RestrictAddressFamilies"))
used, fams = set(), set()
for path in sys.argv[2:]:
    for line in open(path, errors="replace"):
        m = re.match(r"\d+\s+([a-z_0-9]+)\(", line)
        if m:
            used.add(m.group(1))
        m = re.search(r"\bsocket\((AF_[A-Z0-9]+)", line)
        if m:
            fams.add(m.group(1))
# execve of the wrappers happens before the unit's filter would apply.
bad = sorted(used - allowed - {"execve"})
badf = sorted(fams - families)
print(f"verify-capabilities: {len(used)} system calls, families {sorted(fams)}:",
      "within the unit's SystemCallFilter/RestrictAddressFamilies" if not bad and not badf
      else f"FAIL outside the unit's filter: calls {bad}, families {badf}")
sys.exit(1 if bad or badf else 0)
PY
  then :; else errors=$((errors + 1)); fi
else
  echo "verify-capabilities: system calls NOT checked against the unit (no strace)"
fi
exit $((errors > 0))
