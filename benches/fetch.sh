#!/usr/bin/env bash
# POST /fetch of 10 URLs against a local upstream that takes 50 ms per GET,
# at 32 concurrent clients (wrk on loopback, release builds). Every URL is
# distinct, so each is fetched for real. Prints fetches/s, p50 and p99, and
# how far the p99 is above the 50 ms floor.
#
#   bash benches/fetch.sh                  # 3 passes of 10 s
#   PASSES=1 DURATION=2 bash benches/fetch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PASSES=${PASSES:-3}
DURATION=${DURATION:-10}
PORT=${PORT:-18310}
UPSTREAM_PORT=18300
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
source benches/common.sh

cargo build --release --quiet
cargo bench --bench upstream --no-run --quiet 2>/dev/null
upstream=$(ls -t target/release/deps/upstream-* | grep -v '\.d$' | head -1)
"$upstream" "$UPSTREAM_PORT" 50 >"$work/upstream.log" 2>&1 &
start fetch SWITCHBOARD_RATE_LIMIT_PER_SECOND=0 SWITCHBOARD_FETCH_ALLOW_HOSTS=127.0.0.1:$UPSTREAM_PORT \
    SWITCHBOARD_FETCH_HOST_CONCURRENCY=1024

sed "s/upstream_port or \"18300\"/\"$UPSTREAM_PORT\"/" benches/fetch.lua >"$work/fetch.lua"
for _ in $(seq "$PASSES"); do
    measure fetch "$work/fetch.lua" 32
done
if curl -s -XPOST "http://127.0.0.1:$PORT/fetch" -H 'content-type: application/json' \
    -d "{\"urls\":[\"http://127.0.0.1:$UPSTREAM_PORT/check\"]}" | grep -q '"success":false'; then
    echo "a fetch failed" >&2; exit 1
fi
rps=$(median 1 fetch)
p50=$(median 2 fetch)
p99=$(median 3 fetch)
awk -v rps="$rps" -v p50="$p50" -v p99="$p99" 'BEGIN {
    printf "POST /fetch (10 URLs x 50 ms), 32 clients: %.0f fetches/s (%.0f upstream GETs/s), p50 %.1f ms, p99 %.1f ms, p99 - 50 ms floor = %.1f ms\n", rps, rps * 10, p50, p99, p99 - 50
}'
echo "(${PASSES} passes of ${DURATION}s, wrk -t2 -c32, medians)"
