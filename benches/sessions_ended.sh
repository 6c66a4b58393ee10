#!/usr/bin/env bash
# What clients see when PostgreSQL ends switchboard's sessions (a restart, a
# failover, pg_terminate_backend) under load. A release build runs on
# PostgreSQL with the cache and the rate limiter off, so every request
# reaches the database; wrk sends a benches/load.lua scenario at 32
# connections for 3 s, and 1 s in every session of the database is ended.
# Prints the statuses the server logged for the load's requests, over all
# rounds.
#
#   bash benches/sessions_ended.sh              # get, then create; 5 rounds each
#   ROUNDS=2 bash benches/sessions_ended.sh get
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
PORT=${PORT:-18195}
ADMIN=postgres://postgres@127.0.0.1:5432/postgres
DB=switchboard_sessions_ended
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1; rm -rf "$work"' EXIT
source benches/common.sh
cargo build --release --quiet

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(get create)
for scenario in "${scenarios[@]}"; do
    psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null 2>&1
    start "$scenario" RUST_LOG=info SWITCHBOARD_LOG_FORMAT=json \
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" \
        SWITCHBOARD_CACHE_MAX_ENTRIES=0 SWITCHBOARD_RATE_LIMIT_PER_SECOND=0
    seed 1000
    seeded=$(wc -l <"$work/$scenario.log")
    for round in $(seq "$ROUNDS"); do
        SCENARIO=$scenario USERS=1000 TAG="ended$round" \
            wrk -t2 -c32 -d3s -s benches/load.lua "http://127.0.0.1:$PORT" >/dev/null &
        sleep 1
        psql "$ADMIN" -qAtc "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
            WHERE datname = '$DB'" >/dev/null
        wait $!
    done
    stop
    echo "$scenario, $ROUNDS rounds, answers by status: $(tail -n +$((seeded + 1)) "$work/$scenario.log" |
        grep -o '"status":[0-9]*' | cut -d: -f2 | sort | uniq -c | awk '{printf "%s: %s  ", $2, $1}')"
done
