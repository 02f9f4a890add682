# syntax=docker/dockerfile:1
#
# segstream container image.
#
#   docker build -t segstream .
#   docker run --rm -p 9464:9464 -e SEGSTREAM__KAFKA__BROKERS=broker:9092 segstream
#
# The image runs `segstream run --config /etc/segstream/segstream.toml` as an unprivileged
# user. The default configuration is deploy/segstream.toml and the segment definitions are
# those of segments/ (mount your own over /etc/segstream to change either; any key can be
# overridden with a SEGSTREAM__SECTION__KEY environment variable).

# ---------------------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder

# rdkafka's default features build the bundled librdkafka with its own `configure` script
# (mklove) and `make`: it needs a C and a C++ compiler, make, and zlib (libz-sys finds the
# system's through pkg-config). No cmake, no OpenSSL (the default build has no TLS; enable
# rdkafka's `ssl` feature and add libssl-dev here for that). python3 only lets librdkafka
# generate its linker script. The rust image ships most of this already; it is listed so
# that the build does not depend on what the base image happens to contain. Versions are
# not pinned: the stable release's security updates should be picked up.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        make gcc g++ pkg-config zlib1g-dev python3 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# The whole workspace (see .dockerignore): the service crate and crates/segstream-core;
# Cargo needs the declared benches and tests to exist even when it builds only the binary.
COPY . .

# BuildKit cache mounts keep the registry and the compiled dependencies between builds;
# the binary is copied out of the cached target directory in the same step. The release
# profile keeps line tables (debug = 1) for the benchmarks; strip them from the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin segstream \
    && cp target/release/segstream /usr/local/bin/segstream \
    && strip --strip-debug /usr/local/bin/segstream \
    && /usr/local/bin/segstream --version

# ---------------------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates for brokers reached over TLS (when built with TLS); zlib for librdkafka's
# compression (part of the base image already, listed to make the dependency explicit).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g \
    && rm -rf /var/lib/apt/lists/*

# A fixed, numeric, unprivileged user: Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 segstream \
    && useradd --system --uid 10001 --gid segstream --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin segstream

COPY --from=builder /usr/local/bin/segstream /usr/local/bin/segstream
COPY segments/ /etc/segstream/segments/
COPY deploy/segstream.toml /etc/segstream/segstream.toml

# Fail the image build, not the first start, if the shipped definitions are invalid.
RUN segstream validate --segments /etc/segstream/segments/library.toml

# Relative paths (e.g. `segstream demo`'s default segments/demo.toml) resolve here.
WORKDIR /etc/segstream
USER 10001:10001

# /metrics, /healthz, /readyz and the profile API (deploy/segstream.toml listens on
# 0.0.0.0:9464; the built-in default is 127.0.0.1:9464, unreachable from outside).
EXPOSE 9464

# segstream is PID 1 and handles SIGTERM itself: it finishes the batch, flushes the
# producer and commits within shutdown_deadline (30 s by default).
STOPSIGNAL SIGTERM
ENTRYPOINT ["segstream"]
CMD ["run", "--config", "/etc/segstream/segstream.toml"]
