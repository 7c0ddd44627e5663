# syntax=docker/dockerfile:1
# apm-rs image: build with the Rust toolchain, run on a slim Debian.
#   docker build -t apm-rs:local .
#   docker run -p 8200:8200 apm-rs:local -E output.elasticsearch.hosts='["http://es:9200"]'

FROM rust:1-slim-bookworm AS builder
WORKDIR /src
# rustls only: no OpenSSL headers needed; ring needs the C compiler the image ships.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p apm-rs --bin apm-rs \
    && cp target/release/apm-rs /usr/local/bin/apm-rs

FROM debian:bookworm-slim AS runtime
# ca-certificates: TLS to Elasticsearch; curl: the container health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 1000 --home-dir /usr/share/apm-rs --create-home apm-rs
COPY --from=builder /usr/local/bin/apm-rs /usr/local/bin/apm-rs
WORKDIR /usr/share/apm-rs
USER apm-rs
EXPOSE 8200 4317
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=5 \
    CMD curl -fsS -o /dev/null http://localhost:8200/ || exit 1
ENTRYPOINT ["/usr/local/bin/apm-rs"]
# Inside a container the server must listen on all interfaces (intake and
# OTLP/gRPC).
CMD ["-E", "apm-server.host=0.0.0.0:8200", "-E", "apm-server.otlp.grpc.host=0.0.0.0:4317"]
