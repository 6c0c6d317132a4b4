# syntax=docker/dockerfile:1
# tensorwire sidecar image.
#
#   docker build -t tensorwire:0.1.0 .
#       the runtime image (last stage): stripped binary, default config
#   docker build --target debug --output type=local,dest=out .
#       out/tensorwire.debug: the DWARF split from that same binary (same
#       build cache, same bytes); `gdb /usr/local/bin/tensorwire core` finds
#       it through the binary's .gnu_debuglink when it sits next to it or in
#       /usr/lib/debug/usr/local/bin/.
#
# Running it (deploy/README.md has the walkthrough):
#   UDP socket ingress: no capability at all (port 7878 > 1024), non-root:
#     docker run --rm --cap-drop ALL --security-opt no-new-privileges \
#       -p 7878:7878/udp tensorwire:0.1.0
#   AF_XDP ingress on a host interface:
#     docker run --rm --network host --user 0 \
#       --cap-drop ALL --cap-add NET_ADMIN --cap-add BPF --cap-add PERFMON \
#       --cap-add NET_RAW --cap-add IPC_LOCK --ulimit memlock=-1 \
#       --security-opt no-new-privileges \
#       -e TENSORWIRE__INGRESS__MODE=xdp -e TENSORWIRE__INGRESS__INTERFACE=eth1 \
#       tensorwire:0.1.0
#   NET_ADMIN attaches the XDP program, BPF loads it (kernel >= 5.8; older
#   kernels need SYS_ADMIN instead), PERFMON lets the verifier accept its
#   packet pointer arithmetic, NET_RAW creates the AF_XDP sockets, IPC_LOCK
#   and memlock=-1 let it lock the UMEM: each one is needed
#   (deploy/verify-capabilities.sh). `--user 0`: Docker makes --cap-add
#   effective only for uid 0 (a non-root user gets them in the bounding set
#   only); uid 0 here holds just those five, and tensorwire drops them all
#   and sets no_new_privs once attached and bound.

# Pinned by tag; pin the digests (@sha256:...) in your release pipeline.
FROM rust:1.88.0-bookworm AS build
# Debian package versions move with security updates; the base images are pinned instead.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev libelf-dev zlib1g-dev m4 pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# --locked: exactly the Cargo.lock versions. The release profile keeps
# limited debug info (Cargo.toml: debug = 1); it is split off here: the
# shipped binary keeps its symbol table (function names in backtraces) and a
# .gnu_debuglink (file name + CRC) to tensorwire.debug.
RUN cargo build --release --locked --bin tensorwire \
 && mkdir /out \
 && objcopy --only-keep-debug target/release/tensorwire /out/tensorwire.debug \
 && objcopy --strip-debug --add-gnu-debuglink=/out/tensorwire.debug \
      target/release/tensorwire /out/tensorwire

# `--target debug`: only the debug file, for `--output` to export.
FROM scratch AS debug
COPY --from=build /out/tensorwire.debug /tensorwire.debug

FROM debian:bookworm-slim AS runtime
# libelf and zlib: libbpf's runtime libraries. No ca-certificates: the
# upstreams are plain HTTP by design (model server on loopback).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libelf1 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tensorwire \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin tensorwire
COPY --from=build /out/tensorwire /usr/local/bin/tensorwire
# The documented default config (socket ingress unless an interface is set,
# `echo` upstream, admin on 127.0.0.1:9878). Mount your own over it, or
# override keys with TENSORWIRE__SECTION__KEY variables.
COPY config/tensorwire.toml /etc/tensorwire/tensorwire.toml
# Numeric, so that Kubernetes' runAsNonRoot can check it without /etc/passwd.
USER 10001:10001
# 7878/udp: TWP/1. 9878/tcp: admin (/metrics, /healthz, /readyz, /describe);
# the default config binds it to 127.0.0.1: set
# TENSORWIRE__ADMIN__LISTEN=0.0.0.0:9878 to publish it.
EXPOSE 7878/udp 9878/tcp
# GET /healthz on the admin listener (default 127.0.0.1:9878, reachable from
# inside the container either way); the slim image has no curl. Kubernetes
# ignores HEALTHCHECK: the manifests use httpGet probes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/tensorwire", "health"]
ENTRYPOINT ["/usr/local/bin/tensorwire"]
CMD ["run", "--config", "/etc/tensorwire/tensorwire.toml"]
