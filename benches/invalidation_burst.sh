#!/usr/bin/env bash
# What a burst of writes that other instances hear costs one instance's
# memory: a release build (or BINARY) listens on a fresh PostgreSQL
# database, ROWS users are inserted and then deleted by hand in one
# statement (one notification per row, as a bulk UPDATE or DELETE sends),
# and the instance's RSS and `cache_invalidations_received_total` are read
# every half second until it has heard them all and 8 s more have passed.
#
#   bash benches/invalidation_burst.sh                    # 1,000,000 rows
#   ROWS=300000 bash benches/invalidation_burst.sh BINARY
set -euo pipefail
cd "$(dirname "$0")/.."
BINARY=${1:-target/release/switchboard}
ROWS=${ROWS:-1000000}
PORT=${PORT:-18999}
ADMIN=postgres://postgres@127.0.0.1:5432/postgres
DB=switchboard_invalidation_burst
URL=postgres://postgres@127.0.0.1:5432/$DB
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1; rm -rf "$work"' EXIT
[ -x "$BINARY" ] || cargo build --release --locked --bin switchboard

psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" 2>/dev/null
DATABASE_URL=$URL SWITCHBOARD_BIND=127.0.0.1:$PORT RUST_LOG=warn "$BINARY" >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null || { echo "switchboard did not start" >&2; cat "$work/log" >&2; exit 1; }
psql "$URL" -qc "INSERT INTO users (name, email, email_key, created_at, updated_at) \
    SELECT 'Burst', 'b' || n || '@example.com', 'b' || n || '@example.com', now(), now() \
    FROM generate_series(1, $ROWS) AS n"
echo "before: RSS $(ps -o rss= -p "$pid") KiB"
started=$(date +%s.%N)
psql "$URL" -qc "DELETE FROM users"
echo "deleted $ROWS rows in $(echo "$(date +%s.%N) - $started" | bc | cut -c1-5) s"
after_all=0
while [ "$after_all" -lt 16 ]; do
    heard=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^cache_invalidations_received_total/ {print $2}')
    echo "$(echo "$(date +%s.%N) - $started" | bc | cut -c1-5) s: RSS $(ps -o rss= -p "$pid") KiB, heard $heard"
    if [ "$heard" = "$ROWS" ]; then after_all=$((after_all + 1)); fi
    sleep 0.5
done
