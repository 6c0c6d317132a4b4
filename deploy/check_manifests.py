#!/usr/bin/env python3
"""Cross-checks of the deployment packaging that no schema validator makes.

kubernetes-validate proves each rendered resource is well-formed; this
script checks that the pieces agree with each other and with the contract
of the tensorwire binary (README "Configuration", deploy/README.md):

  * the tensorwire.toml embedded in each rendered ConfigMap parses and is
    consistent with the pod: ingress port = Service/containerPort, admin
    port = probes = Prometheus annotation, the upstream URL points at a
    port of another container in the pod, drain timeout < grace period;
  * least privilege: read-only root, no privilege escalation, ALL dropped,
    no capability for the socket ingress, exactly NET_ADMIN, BPF, PERFMON,
    NET_RAW, IPC_LOCK for AF_XDP (deploy/verify-capabilities.sh shows the
    binary needs each of them);
  * no two containers of a pod claim the same port;
  * the systemd unit and the Dockerfile carry the same capability recipe.

Usage: check_manifests.py --rendered DIR --configs-out DIR --unit FILE
       --dockerfile FILE
DIR holds one NAME.yaml per rendered kustomization; each embedded config is
written to CONFIGS_OUT/NAME.toml for `tensorwire config check`.
Prints one line per finding; exits 1 if there is any.
"""

import argparse
import pathlib
import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: the `tomli` backport
    import tomli as tomllib
import yaml

XDP_CAPS = {"NET_ADMIN", "BPF", "PERFMON", "NET_RAW", "IPC_LOCK"}
CONFIG_KEY = "tensorwire.toml"


class Findings:
    def __init__(self):
        self.errors = []

    def check(self, ok, where, message):
        if not ok:
            self.errors.append(f"{where}: {message}")
        return ok


def port_of(addr):
    """Port of "host:port" / "[v6]:port" / "$(POD_IP):port"."""
    m = re.search(r":(\d+)$", addr or "")
    return int(m.group(1)) if m else None


def host_of(addr):
    return (addr or "").rsplit(":", 1)[0].strip("[]")


def env_value(container, name):
    for e in container.get("env", []):
        if e.get("name") == name:
            return e.get("value")
    return None


def resolve_port(container, port):
    """A probe's port: a number or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def check_overlay(name, docs, out_dir, f):
    w = name
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    deps = [d for d in by_kind.get("Deployment", []) if d["metadata"]["name"] == "tensorwire"]
    if not f.check(len(deps) == 1, w, "exactly one Deployment `tensorwire` expected"):
        return
    dep = deps[0]
    tmpl = dep["spec"]["template"]
    pod = tmpl["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    tw = containers.get("tensorwire")
    if not f.check(tw is not None, w, "no container `tensorwire`"):
        return
    wc = f"{w}: container tensorwire"

    # --- the embedded config -------------------------------------------
    cm_name = None
    for v in pod.get("volumes", []):
        if v.get("name") == "config" and "configMap" in v:
            cm_name = v["configMap"]["name"]
    cms = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    if not f.check(cm_name in cms, w, f"volume `config` names ConfigMap {cm_name!r}, not in the render"):
        return
    text = cms[cm_name].get("data", {}).get(CONFIG_KEY)
    if not f.check(text is not None, w, f"ConfigMap {cm_name} has no key {CONFIG_KEY}"):
        return
    mounts = {m["name"]: m["mountPath"] for m in tw.get("volumeMounts", [])}
    args = tw.get("args", [])
    cfg_path = args[args.index("--config") + 1] if "--config" in args else None
    f.check(cfg_path == f"{mounts.get('config')}/{CONFIG_KEY}", wc,
            f"--config {cfg_path} is not the mounted ConfigMap ({mounts.get('config')}/{CONFIG_KEY})")
    out = out_dir / f"{name}.toml"
    out.write_text(text)
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        f.check(False, w, f"embedded {CONFIG_KEY} is not valid TOML: {e}")
        return

    ingress = cfg.get("ingress", {})
    mode = ingress.get("mode", "auto")
    f.check(mode in ("auto", "xdp", "socket"), w, f"ingress.mode {mode!r}")
    ports = {(p.get("name")): p for p in tw.get("ports", [])}
    twp = ports.get("twp", {})
    f.check(port_of(ingress.get("listen", "0.0.0.0:7878")) == twp.get("containerPort")
            and twp.get("protocol") == "UDP", wc,
            f"ingress.listen {ingress.get('listen')} does not match containerPort twp {twp}")

    # Admin: the TOML value unless the env overrides it.
    admin = env_value(tw, "TENSORWIRE__ADMIN__LISTEN") or cfg.get("admin", {}).get("listen", "127.0.0.1:9878")
    admin_port = port_of(admin)
    f.check(not host_of(admin).startswith("127.") and host_of(admin) not in ("::1", "localhost"), wc,
            f"admin listens on {admin}: the kubelet's probes and Prometheus come from outside the pod")
    f.check(ports.get("admin", {}).get("containerPort") == admin_port, wc,
            f"containerPort admin {ports.get('admin')} != admin.listen port {admin_port}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = tw.get(probe, {}).get("httpGet", {})
        f.check(get.get("path") == path and resolve_port(tw, get.get("port")) == admin_port, wc,
                f"{probe} must GET {path} on the admin port {admin_port}, has {get}")
    ann = tmpl["metadata"].get("annotations", {})
    f.check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(admin_port)
            and ann.get("prometheus.io/path") == "/metrics", w,
            f"Prometheus annotations must scrape /metrics on {admin_port}: {ann}")

    # $(VAR) references only see variables defined earlier in the list.
    seen = set()
    for e in tw.get("env", []):
        for ref in re.findall(r"\$\((\w+)\)", e.get("value") or ""):
            f.check(ref in seen, wc, f"env {e['name']} uses $({ref}) before it is defined")
        seen.add(e["name"])

    # Drain inside the grace period, with the model servers' preStop sleeps.
    drain_ms = ingress.get("drain_timeout_ms", 5000)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    for c in pod["containers"]:
        cmd = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        if cmd[:1] == ["sleep"]:
            f.check(int(cmd[1]) * 1000 > drain_ms, f"{w}: container {c['name']}",
                    f"preStop sleep {cmd[1]} s must outlast the drain ({drain_ms} ms)")
            f.check(grace > int(cmd[1]) + 5, w, f"grace {grace} s leaves no time after preStop {cmd[1]} s")
    f.check(grace * 1000 > drain_ms, w, f"terminationGracePeriodSeconds {grace} s <= drain_timeout_ms {drain_ms}")

    # Upstreams: each pipeline names one; URLs reach a container of the pod.
    ups = cfg.get("upstreams", {})
    other_ports = {p["containerPort"] for c in pod["containers"] if c["name"] != "tensorwire"
                   for p in c.get("ports", [])}
    for pl in cfg.get("pipelines", []):
        f.check(pl.get("upstream") == "echo" or pl.get("upstream") in ups, w,
                f"pipeline {pl.get('name')} names unknown upstream {pl.get('upstream')!r}")
    for uname, u in ups.items():
        m = re.match(r"http://([^/:]+):(\d+)", u.get("url", ""))
        if f.check(m is not None, w, f"upstreams.{uname}.url {u.get('url')!r} is not http://host:port"):
            f.check(m.group(1) in ("127.0.0.1", "localhost") and int(m.group(2)) in other_ports, w,
                    f"upstreams.{uname}.url {u['url']} is no port of a model server container {sorted(other_ports)}")

    # No port taken twice in the pod (one network namespace).
    claimed = {}
    for c in pod["containers"]:
        for p in c.get("ports", []):
            key = (p["containerPort"], p.get("protocol", "TCP"))
            f.check(key not in claimed, w, f"port {key} claimed by {claimed.get(key)} and {c['name']}")
            claimed[key] = c["name"]

    # Resources and security for every container; the tensorwire one strictly.
    for c in pod["containers"]:
        wn = f"{w}: container {c['name']}"
        res = c.get("resources", {})
        f.check("requests" in res and "limits" in res and "memory" in res["limits"], wn,
                "needs resource requests and a memory limit")
        sc = c.get("securityContext", {})
        f.check(sc.get("allowPrivilegeEscalation") is False, wn, "allowPrivilegeEscalation must be false")
        f.check(sc.get("privileged") is not True, wn, "must not be privileged")
        f.check(sc.get("capabilities", {}).get("drop") == ["ALL"], wn, "must drop ALL capabilities")
    sc = tw.get("securityContext", {})
    added = set(sc.get("capabilities", {}).get("add", []))
    f.check(sc.get("readOnlyRootFilesystem") is True, wc, "readOnlyRootFilesystem must be true")
    if mode == "xdp":
        f.check(added == XDP_CAPS, wc, f"AF_XDP adds exactly {sorted(XDP_CAPS)}, not {sorted(added)}")
        f.check(bool(ingress.get("interface")), w, "ingress.mode xdp needs ingress.interface")
        f.check("mtu" in ingress, w, "ingress.mtu must be set to the interface's MTU")
        f.check(pod.get("hostNetwork") is True, w,
                "AF_XDP on a host interface needs hostNetwork (or a Multus interface: adapt this check)")
        f.check(cfg.get("security", {}).get("allowlist"), w,
                "hostNetwork: NetworkPolicies do not apply, security.allowlist must be set")
    else:
        f.check(not added, wc, f"the socket ingress needs no capability, adds {sorted(added)}")
        nonroot = sc.get("runAsNonRoot", pod.get("securityContext", {}).get("runAsNonRoot"))
        f.check(nonroot is True and sc.get("runAsUser", 1) != 0, wc, "must run as non-root")
        f.check(not pod.get("hostNetwork"), w, "the socket ingress belongs in the pod network")

    # Service: UDP 7878 to the twp port of these pods.
    svcs = [s for s in by_kind.get("Service", []) if s["metadata"]["name"] == "tensorwire"]
    if f.check(len(svcs) == 1, w, "exactly one Service `tensorwire` expected"):
        sp = svcs[0]["spec"]
        f.check(any(p.get("protocol") == "UDP" and p.get("port") == 7878 and p.get("targetPort") in ("twp", 7878)
                    for p in sp["ports"]), w, f"Service needs UDP 7878 -> twp: {sp['ports']}")
        f.check(all(tmpl["metadata"]["labels"].get(k) == v for k, v in sp["selector"].items()), w,
                "Service selector does not select the pod template")

    # NetworkPolicy: UDP 7878 from labelled client namespaces, admin from monitoring.
    nps = by_kind.get("NetworkPolicy", [])
    if f.check(len(nps) == 1, w, "exactly one NetworkPolicy expected"):
        spec = nps[0]["spec"]
        f.check(all(tmpl["metadata"]["labels"].get(k) == v
                    for k, v in spec["podSelector"].get("matchLabels", {}).items()), w,
                "NetworkPolicy does not select the pod")
        rules = {(p["protocol"], p["port"]): r["from"] for r in spec.get("ingress", []) for p in r["ports"]}
        f.check(set(rules) == {("UDP", 7878), ("TCP", admin_port)}, w,
                f"NetworkPolicy must open exactly UDP 7878 and TCP {admin_port}: {sorted(rules)}")
        mon = rules.get(("TCP", admin_port), [{}])[0].get("namespaceSelector", {}).get("matchLabels", {})
        f.check(mon.get("kubernetes.io/metadata.name") == "monitoring", w,
                "admin port must be open to the monitoring namespace only")
        cli = rules.get(("UDP", 7878), [{}])[0]
        f.check("namespaceSelector" in cli and "ipBlock" not in cli, w,
                "UDP 7878 must be open to client namespaces (label selector) only")


def unit_values(text):
    vals = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            vals.setdefault(k, []).append(v)
    return vals


def check_unit(path, f):
    w = str(path)
    u = unit_values(path.read_text())
    caps = {"CAP_" + c for c in XDP_CAPS}
    for key in ("AmbientCapabilities", "CapabilityBoundingSet"):
        f.check(set(" ".join(u.get(key, [])).split()) == caps, w, f"{key} must be exactly {sorted(caps)}")
    for key, want in (("NoNewPrivileges", "yes"), ("LimitMEMLOCK", "infinity"), ("User", "tensorwire"),
                      ("ProtectSystem", "strict"), ("Restart", "on-failure"), ("KillSignal", "SIGTERM"),
                      ("PrivateTmp", "yes")):
        f.check(u.get(key) == [want], w, f"{key}={want} expected, has {u.get(key)}")
    f.check(u.get("ProtectHome", ["no"])[0] in ("yes", "read-only", "tmpfs"), w, "ProtectHome expected")
    f.check(u.get("ExecStart") == ["/usr/local/bin/tensorwire run --config /etc/tensorwire/tensorwire.toml"],
            w, f"ExecStart: {u.get('ExecStart')}")
    m = re.fullmatch(r"(\d+)s?", (u.get("TimeoutStopSec") or [""])[0])
    f.check(m is not None and int(m.group(1)) * 1000 > 5000, w,
            "TimeoutStopSec must exceed ingress.drain_timeout_ms (5 s by default)")


def check_dockerfile(path, f):
    w = str(path)
    text = path.read_text()
    f.check(re.search(r'^HEALTHCHECK .*CMD \["/usr/local/bin/tensorwire", ?"health"\]', text, re.M | re.S), w,
            "HEALTHCHECK must run tensorwire health")
    f.check(re.search(r"^EXPOSE 7878/udp 9878/tcp$", text, re.M), w, "EXPOSE 7878/udp 9878/tcp expected")
    users = re.findall(r"^USER (\S+)", text, re.M)
    f.check(users and not users[-1].split(":")[0] in ("0", "root"), w, "the runtime image must run as non-root")
    f.check(re.search(r"^FROM \S+ AS debug$", text, re.M) and "--only-keep-debug" in text
            and "--add-gnu-debuglink" in text, w, "debug stage with split debug info expected")
    f.check("--locked" in text, w, "cargo build --locked expected")
    f.check(re.findall(r"^FROM (\S+)", text, re.M)[-1] != "scratch", w, "the last stage must be the runtime")
    for cap in sorted(XDP_CAPS):
        f.check(f"--cap-add {cap}" in text, w, f"the AF_XDP docker run recipe lacks --cap-add {cap}")
    f.check("--ulimit memlock=-1" in text and "--cap-drop ALL" in text, w, "docker run recipe incomplete")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rendered", type=pathlib.Path, required=True)
    ap.add_argument("--configs-out", type=pathlib.Path, required=True)
    ap.add_argument("--unit", type=pathlib.Path, required=True)
    ap.add_argument("--dockerfile", type=pathlib.Path, required=True)
    a = ap.parse_args()
    f = Findings()
    rendered = sorted(a.rendered.glob("*.yaml"))
    f.check(rendered, str(a.rendered), "no rendered manifests")
    for r in rendered:
        docs = [d for d in yaml.safe_load_all(r.read_text()) if d]
        check_overlay(r.stem, docs, a.configs_out, f)
    check_unit(a.unit, f)
    check_dockerfile(a.dockerfile, f)
    for e in f.errors:
        print(f"check-deploy: FAIL {e}")
    if f.errors:
        return 1
    print(f"check-deploy: cross-checks ok ({len(rendered)} renders, unit, Dockerfile)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
