# tensorwire sidecar image. Build: docker build -t tensorwire .
# Run next to a model server; AF_XDP needs --cap-add NET_ADMIN,NET_RAW,BPF,SYS_ADMIN
# and host networking or the pod's interface; the socket ingress needs none.

FROM rust:1.88-bookworm AS build
# Debian package versions move with security updates; the base images are pinned instead.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev libelf-dev zlib1g-dev m4 pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tensorwire

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libelf1 zlib1g ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home tensorwire
COPY --from=build /src/target/release/tensorwire /usr/local/bin/tensorwire
COPY config/tensorwire.toml /etc/tensorwire/tensorwire.toml
USER 10001
EXPOSE 7878/udp
ENTRYPOINT ["/usr/local/bin/tensorwire"]
CMD ["run", "--config", "/etc/tensorwire/tensorwire.toml"]
