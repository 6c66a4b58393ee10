#!/usr/bin/env bash
# What the guards cost: GET /hello with the rate limiter off and on, and a
# cached GET /users/{id} with it on, measured in one run with wrk on loopback
# against a release build, alternating scenarios for PASSES passes so that
# noise on a shared 2-core machine hits all of them alike. Prints the median
# requests/s and p99 of each scenario and the ratios.
#
#   bash benches/guards.sh            # 3 passes of 8 s at 64 connections
#   PASSES=1 DURATION=2 bash benches/guards.sh   # smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
PASSES=${PASSES:-3}
DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-64}
PORT=${PORT:-18190}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet
bin=target/release/switchboard

start() { # start NAME [VAR=VALUE...]: switchboard on $PORT with a fresh SQLite file
    env SWITCHBOARD_BIND=127.0.0.1:$PORT DATABASE_URL="$work/$1.db" RUST_LOG=warn \
        SWITCHBOARD_TRUST_PROXY=true "${@:2}" "$bin" >"$work/$1.log" 2>&1 &
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return; sleep 0.1; done
    echo "switchboard did not start" >&2; cat "$work/$1.log" >&2; exit 1
}
stop() { kill "$(jobs -p)" 2>/dev/null || true; wait 2>/dev/null || true; }
seed() {
    for i in $(seq 1 1000); do printf '{"name":"User %d","email":"u%d@example.com"}\n' "$i" "$i"; done |
        xargs -d '\n' -P 8 -I{} curl -sf -o /dev/null -X POST "http://127.0.0.1:$PORT/users" \
            -H 'content-type: application/json' -d {}
}
measure() { # measure SCENARIO SCRIPT: one wrk pass, appends "rps p99_ms" to $work/SCENARIO
    wrk -t2 -c"$CONNECTIONS" -d1s -s "benches/$2" "http://127.0.0.1:$PORT" >/dev/null
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "benches/$2" "http://127.0.0.1:$PORT" >"$work/out"
    if grep -q "Non-2xx" "$work/out"; then echo "$1: errors during the run" >&2; cat "$work/out" >&2; exit 1; fi
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/out")
    p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' "$work/out")
    echo "$rps $p99" >>"$work/$1"
}
unlimited=(SWITCHBOARD_RATE_LIMIT_PER_SECOND=0)
limited=(SWITCHBOARD_RATE_LIMIT_PER_SECOND=1000000 SWITCHBOARD_RATE_LIMIT_BURST=1000000)

for pass in $(seq "$PASSES"); do
    start off "${unlimited[@]}"; measure hello_guards_off hello_xff.lua; stop
    start on "${limited[@]}"; measure hello_guards_on hello_xff.lua
    [ "$pass" = 1 ] && seed
    measure users_cached_guards_on user_xff.lua; stop
    rm -f "$work/off.db"*
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
printf '%-26s %12s %10s\n' scenario "requests/s" "p99 ms"
for s in hello_guards_off hello_guards_on users_cached_guards_on; do
    printf '%-26s %12.0f %10.2f\n' "$s" "$(cut -d' ' -f1 "$work/$s" | median)" "$(cut -d' ' -f2 "$work/$s" | median)"
    declare "rps_$s=$(cut -d' ' -f1 "$work/$s" | median)"
done
awk -v on="$rps_hello_guards_on" -v off="$rps_hello_guards_off" -v users="$rps_users_cached_guards_on" 'BEGIN {
    printf "guards on / off (/hello):          %.2f\n", on / off
    printf "cached /users/{id} / /hello (on):  %.2f\n", users / on
}'
echo "(${PASSES} passes of ${DURATION}s, ${CONNECTIONS} connections, wrk -t2, medians)"
