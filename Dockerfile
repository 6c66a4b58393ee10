# syntax=docker/dockerfile:1
# switchboard's container image: built in one stage, run from a small one,
# as an unprivileged user. Settings come from the environment (see the
# README); the defaults here serve the API on all interfaces (port 8080),
# the metrics on an admin listener (port 9091), with SQLite under
# /var/lib/switchboard and JSON logs. Serving beyond loopback needs a token
# key (or SWITCHBOARD_AUTH=none behind a proxy that authenticates):
#
#   DOCKER_BUILDKIT=1 docker build -t switchboard .
#   docker run -p 8080:8080 -v "$PWD/jwks.json:/etc/switchboard/jwks.json:ro" \
#       -e SWITCHBOARD_AUTH_JWKS_FILE=/etc/switchboard/jwks.json switchboard
#
# The crates and the build's target folder live in BuildKit cache mounts, so
# a change to switchboard's source rebuilds switchboard alone, not its
# dependencies.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY benches benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin switchboard \
    && cp target/release/switchboard /usr/local/bin/switchboard

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="switchboard" \
      org.opencontainers.image.description="An actor-based REST service: users API and outbound fetch API" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT"
# ca-certificates lets /fetch reach https upstreams with a private CA too.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/switchboard switchboard \
    && mkdir -p /var/lib/switchboard \
    && chown switchboard /var/lib/switchboard
COPY --from=build /usr/local/bin/switchboard /usr/local/bin/switchboard
USER 10001
WORKDIR /var/lib/switchboard
# The SQLite file, when DATABASE_URL is not PostgreSQL.
VOLUME ["/var/lib/switchboard"]
ENV SWITCHBOARD_BIND=0.0.0.0:8080 \
    SWITCHBOARD_ADMIN_BIND=0.0.0.0:9091 \
    DATABASE_URL=sqlite:///var/lib/switchboard/switchboard.db \
    SWITCHBOARD_LOG_FORMAT=json
EXPOSE 8080 9091
# Liveness: 503 once an actor was given up and the process drains to exit.
# The binary asks /health itself: no shell, no HTTP client in the image.
HEALTHCHECK --interval=10s --timeout=5s --retries=3 \
    CMD ["/usr/local/bin/switchboard", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/switchboard"]
