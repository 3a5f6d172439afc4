# syntax=docker/dockerfile:1
#
# One image for every binary of the workspace: relay-cdc, consumer, bot (in /usr/local/bin).
#   docker build -t outbox-cdc:local .          (docker-compose.yml does this for you)
#   docker run --rm outbox-cdc:local relay-cdc --help
# The SQL migrations are embedded in the binaries (sqlx::migrate!), so `relay-cdc migrate`
# needs nothing but DATABASE_URL.

# Builder toolchain (>= the workspace's rust-version) and the Debian suite shared by both stages
# (same glibc): override with --build-arg.
ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_SUITE} AS builder

# rdkafka builds its bundled librdkafka (C, configure + make; cmake for its cmake build) and
# links zlib and the system OpenSSL (libssl-dev, found through pkg-config: TLS and SASL to Kafka).
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# sqlx macros never reach for a database at build time.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never

# The workspace (.dockerignore keeps target/, .git/ and local service state out of the context).
COPY . .

# BuildKit cache mounts keep the crate registry and the target dir between builds, so a source
# change rebuilds only our crates. The target dir is a cache, not a layer: copy the binaries out
# in the same step. sharing=locked serialises the parallel builds compose starts for the
# services that share this image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p relay-cdc -p consumer -p bot \
 && mkdir -p /out \
 && cp target/release/relay-cdc target/release/consumer target/release/bot /out/

# ---------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_SUITE}-slim AS runtime

# libssl3: librdkafka's TLS and SASL (SCRAM) to Kafka; ca-certificates: the system CA store for
# Kafka (ssl.ca.location=probe) and Telegram's Bot API; bash serves compose healthchecks.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 outbox \
 && useradd --system --uid 10001 --gid outbox --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin outbox

COPY --from=builder /out/relay-cdc /out/consumer /out/bot /usr/local/bin/

USER 10001:10001
ENV RUST_LOG=info
# relay-cdc and consumer metrics (/metrics, /healthz, /readyz).
EXPOSE 9464 9465

CMD ["relay-cdc", "--help"]
