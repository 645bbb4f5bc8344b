# syntax=docker/dockerfile:1
# RUIZHU BFF image: one binary (`ruizhu serve | worker | migrate | …`) on Debian slim.
#
#   docker build -t ruizhu:dev .
#   docker run --rm -p 8080:8080 ruizhu:dev serve
#
# Stages: chef (toolchain + cargo-chef) → planner (dependency recipe from the manifests) →
# builder (dependencies cooked in their own layer, rebuilt only when Cargo.toml/Cargo.lock
# change; then our crates) → runtime (the binary, a non-root user, nothing else).

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
# rdkafka builds its bundled librdkafka with make and a C compiler; zlib comes from Debian
# (linked dynamically, zlib1g is in the runtime image).
RUN apt-get update \
 && apt-get install -y --no-install-recommends make g++ pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# the dependency layer: cached until the recipe (manifests and lock file) changes
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin ruizhu
COPY . .
RUN cargo build --release --locked --bin ruizhu \
 && cp target/release/ruizhu /usr/local/bin/ruizhu

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates for outbound TLS (WeChat, WeChat Pay); tini reaps and forwards SIGTERM so
# the graceful drain runs when Docker or Kubernetes stops the container.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ruizhu \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin ruizhu
COPY --from=builder /usr/local/bin/ruizhu /usr/local/bin/ruizhu
# production by default: development conveniences (auto-migrate, demo seed, dev login,
# development payments) are off, JSON logs; docker-compose.yml switches some on for its demo
ENV RUIZHU_ENV=production \
    RUIZHU_HTTP__ADDR=0.0.0.0:8080 \
    RUIZHU_WORKERS__ADDR=0.0.0.0:9090
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 9090
# the process answers (`/healthz`); the worker role overrides the URL (port 9090)
HEALTHCHECK --interval=10s --timeout=4s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/ruizhu", "probe", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/ruizhu"]
CMD ["serve"]
