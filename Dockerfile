# switchboard's container image: built in one stage, run from a small one,
# as an unprivileged user. Settings come from the environment (see the
# README); the defaults here serve on all interfaces with SQLite under
# /var/lib/switchboard and JSON logs.
#
#   docker build -t switchboard .
#   docker run -p 8080:8080 switchboard

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY benches benches
RUN cargo build --release --locked --bin switchboard

FROM debian:bookworm-slim
# curl answers the health check; ca-certificates lets /fetch reach https.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/switchboard switchboard \
    && mkdir -p /var/lib/switchboard \
    && chown switchboard /var/lib/switchboard
COPY --from=build /src/target/release/switchboard /usr/local/bin/switchboard
USER 10001
WORKDIR /var/lib/switchboard
ENV SWITCHBOARD_BIND=0.0.0.0:8080 \
    DATABASE_URL=sqlite:///var/lib/switchboard/switchboard.db \
    SWITCHBOARD_LOG_FORMAT=json
EXPOSE 8080
# Liveness: 503 once an actor was given up and the process drains to exit.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/health"]
ENTRYPOINT ["/usr/local/bin/switchboard"]
