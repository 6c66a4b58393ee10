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
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

cargo build --release --quiet
cargo bench --bench upstream --no-run --quiet 2>/dev/null
upstream=$(ls -t target/release/deps/upstream-* | grep -v '\.d$' | head -1)
"$upstream" "$UPSTREAM_PORT" 50 >"$work/upstream.log" 2>&1 &
SWITCHBOARD_BIND=127.0.0.1:$PORT DATABASE_URL="$work/fetch.db" RUST_LOG=warn \
    SWITCHBOARD_RATE_LIMIT_PER_SECOND=0 SWITCHBOARD_FETCH_ALLOW_HOSTS=127.0.0.1:$UPSTREAM_PORT \
    SWITCHBOARD_FETCH_HOST_CONCURRENCY=1024 target/release/switchboard >"$work/switchboard.log" 2>&1 &
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done

sed "s/upstream_port or \"18300\"/\"$UPSTREAM_PORT\"/" benches/fetch.lua >"$work/fetch.lua"
wrk -t2 -c32 -d2s -s "$work/fetch.lua" "http://127.0.0.1:$PORT" >/dev/null
for pass in $(seq "$PASSES"); do
    wrk -t2 -c32 -d"${DURATION}s" --latency -s "$work/fetch.lua" "http://127.0.0.1:$PORT" >"$work/out"
    if grep -q "Non-2xx" "$work/out"; then echo "errors during the run" >&2; cat "$work/out" >&2; exit 1; fi
    ms() { awk -v q="$1" '$1 == q {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' "$work/out"; }
    echo "$(awk '/Requests\/sec/ {print $2}' "$work/out") $(ms 50%) $(ms 99%)" >>"$work/passes"
done
if curl -s -XPOST "http://127.0.0.1:$PORT/fetch" -H 'content-type: application/json' \
    -d "{\"urls\":[\"http://127.0.0.1:$UPSTREAM_PORT/check\"]}" | grep -q '"success":false'; then
    echo "a fetch failed" >&2; exit 1
fi
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
rps=$(cut -d' ' -f1 "$work/passes" | median)
p50=$(cut -d' ' -f2 "$work/passes" | median)
p99=$(cut -d' ' -f3 "$work/passes" | median)
awk -v rps="$rps" -v p50="$p50" -v p99="$p99" 'BEGIN {
    printf "POST /fetch (10 URLs x 50 ms), 32 clients: %.0f fetches/s (%.0f upstream GETs/s), p50 %.1f ms, p99 %.1f ms, p99 - 50 ms floor = %.1f ms\n", rps, rps * 10, p50, p99, p99 - 50
}'
echo "(${PASSES} passes of ${DURATION}s, wrk -t2 -c32, medians)"
