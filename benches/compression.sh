#!/usr/bin/env bash
# What compressing answers costs: GET /users?limit=50 (a page of 50 users,
# the largest answer switchboard gives) sent as it is and gzip-compressed,
# alternating within each pass, measured with wrk on loopback against a
# release build (SQLite, rate limiter on, every guard and metrics on).
#
#   bash benches/compression.sh               # 5 passes of 8 s at 64 connections
#   PASSES=1 DURATION=2 bash benches/compression.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PASSES=${PASSES:-5}
DURATION=${DURATION:-8}
PORT=${PORT:-18191}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
source benches/common.sh
cargo build --release --quiet

start list SWITCHBOARD_TRUST_PROXY=true \
    SWITCHBOARD_RATE_LIMIT_PER_SECOND=1000000 SWITCHBOARD_RATE_LIMIT_BURST=1000000
seed 50
page="http://127.0.0.1:$PORT/users?limit=50"
identity_bytes=$(curl -s "$page" | wc -c)
gzip_bytes=$(curl -s -H 'accept-encoding: gzip' "$page" | wc -c)
for _ in $(seq "$PASSES"); do
    SCENARIO=list measure identity benches/load.lua
    SCENARIO=list ACCEPT_ENCODING=gzip measure gzip benches/load.lua
done
stop

printf '%-9s %7s %12s %9s %9s\n' answer bytes "requests/s" "p50 ms" "p99 ms"
printf '%-9s %7d %12.0f %9.2f %9.2f\n' identity "$identity_bytes" \
    "$(median 1 identity)" "$(median 2 identity)" "$(median 3 identity)"
printf '%-9s %7d %12.0f %9.2f %9.2f\n' gzip "$gzip_bytes" \
    "$(median 1 gzip)" "$(median 2 gzip)" "$(median 3 gzip)"
awk -v i="$(median 1 identity)" -v g="$(median 1 gzip)" \
    'BEGIN { printf "gzip / identity requests/s: %.2f\n", g / i }'
echo "(${PASSES} passes of ${DURATION}s, 64 connections, wrk -t2, medians)"
