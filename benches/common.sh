# Helpers the benchmark scripts share (sourced, not run): build, start and
# stop switchboard, seed users, run one wrk pass, take medians.
# Expects: $work (a scratch folder), $PORT.

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

# start NAME [VAR=VALUE...]: switchboard on $PORT with the SQLite file $work/NAME.db
start() {
    env SWITCHBOARD_BIND=127.0.0.1:$PORT DATABASE_URL="$work/$1.db" RUST_LOG=warn \
        "${@:2}" target/release/switchboard >"$work/$1.log" 2>&1 &
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return; sleep 0.1; done
    echo "switchboard did not start" >&2; cat "$work/$1.log" >&2; exit 1
}

stop() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; }

# seed N: create users 1..N on the running switchboard
seed() {
    for i in $(seq 1 "$1"); do printf '{"name":"User %d","email":"u%d@example.com"}\n' "$i" "$i"; done |
        xargs -d '\n' -P 8 -I{} curl -sf -o /dev/null -X POST "http://127.0.0.1:$PORT/users" \
            -H 'content-type: application/json' -d {}
}

# measure SCENARIO SCRIPT [CONNECTIONS]: a 1 s warm-up, then one pass of
# $DURATION seconds; appends "requests/s p50_ms p99_ms" to $work/SCENARIO.
measure() {
    local connections=${3:-64}
    wrk -t2 -c"$connections" -d1s -s "$2" "http://127.0.0.1:$PORT" >/dev/null
    wrk -t2 -c"$connections" -d"${DURATION}s" --latency -s "$2" "http://127.0.0.1:$PORT" >"$work/out"
    if grep -q "Non-2xx" "$work/out"; then echo "$1: errors during the run" >&2; cat "$work/out" >&2; exit 1; fi
    echo "$(awk '/Requests\/sec/ {print $2}' "$work/out") $(latency_ms 50%) $(latency_ms 99%)" >>"$work/$1"
}

latency_ms() {
    awk -v q="$1" '$1 == q {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' "$work/out"
}

# median COLUMN SCENARIO: the median of one column of a scenario's passes
median() {
    cut -d' ' -f"$1" "$work/$2" | sort -n |
        awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'
}
