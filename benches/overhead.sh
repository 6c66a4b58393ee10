#!/usr/bin/env bash
# What the guards and the metrics cost, measured in one run with wrk on
# loopback against a release build (SQLite). Scenarios alternate within each
# pass, so noise on a shared 2-core machine hits all of them alike:
#
#   hello_guards_off          GET /hello, rate limiter off, metrics on
#   hello_guards_on           GET /hello, rate limiter on, metrics on
#   users_cached              GET /users/{id} from the cache, everything on
#   hello_metrics_off         GET /hello, rate limiter on, metrics off
#   users_cached_metrics_off  GET /users/{id} from the cache, metrics off
#
# Every request claims a random client address (X-Forwarded-For, with
# SWITCHBOARD_TRUST_PROXY=true), so the limiter sees many clients.
#
#   bash benches/overhead.sh                  # 5 passes of 8 s at 64 connections
#   PASSES=1 DURATION=2 bash benches/overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PASSES=${PASSES:-5}
DURATION=${DURATION:-8}
PORT=${PORT:-18190}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
source benches/common.sh
cargo build --release --quiet

common=(SWITCHBOARD_TRUST_PROXY=true)
limited=(SWITCHBOARD_RATE_LIMIT_PER_SECOND=1000000 SWITCHBOARD_RATE_LIMIT_BURST=1000000)
# Each configuration keeps its own database, seeded once with 1000 users.
run() { # run CONFIG SCENARIO LOAD VAR=VALUE... (LOAD: a benches/load.lua scenario)
    local fresh=0
    [ -f "$work/$1.db" ] || fresh=1
    start "$1" "${common[@]}" "${@:4}"
    [ "$fresh" = 1 ] && seed 1000
    SCENARIO=$3 USERS=1000 measure "$2" benches/load.lua
    stop
}
for _ in $(seq "$PASSES"); do
    run unlimited hello_guards_off hello SWITCHBOARD_RATE_LIMIT_PER_SECOND=0
    run everything hello_guards_on hello "${limited[@]}"
    run everything users_cached get "${limited[@]}"
    run no_metrics hello_metrics_off hello "${limited[@]}" SWITCHBOARD_METRICS=false
    run no_metrics users_cached_metrics_off get "${limited[@]}" SWITCHBOARD_METRICS=false
done

printf '%-26s %12s %9s %9s\n' scenario "requests/s" "p50 ms" "p99 ms"
for s in hello_guards_off hello_guards_on users_cached hello_metrics_off users_cached_metrics_off; do
    printf '%-26s %12.0f %9.2f %9.2f\n' "$s" "$(median 1 $s)" "$(median 2 $s)" "$(median 3 $s)"
done
awk -v off="$(median 1 hello_guards_off)" -v on="$(median 1 hello_guards_on)" \
    -v users="$(median 1 users_cached)" -v hello_nm="$(median 1 hello_metrics_off)" \
    -v users_nm="$(median 1 users_cached_metrics_off)" 'BEGIN {
    printf "guards on / off (/hello):              %.2f\n", on / off
    printf "cached /users/{id} / /hello:           %.2f\n", users / on
    printf "metrics on / off (/hello):             %.2f\n", on / hello_nm
    printf "metrics on / off (cached /users/{id}): %.2f\n", users / users_nm
}'
echo "(${PASSES} passes of ${DURATION}s, 64 connections, wrk -t2, medians)"
