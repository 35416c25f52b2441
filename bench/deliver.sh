#!/usr/bin/env bash
# Delivery benchmark: end-to-end latency (ingest ack -> arrival at a local
# sink) at a paced rate, and sustained delivery throughput to a local sink,
# on SQLite (and PostgreSQL when GATEHOUSE_BENCH_POSTGRES_URL is set).
#
# (a) latency: gatehouse with a stripe source, an http destination pointing at
#     the sink inside `gatehouse-loadgen e2e` and a route between them;
#     `e2e` sends signed events at RATE/s for DURATION and measures, per
#     event, the time from its ingest ack to its arrival at the sink.
# (b) throughput: gatehouse with the route `paused = true` and a separate
#     `gatehouse-loadgen sink`; THROUGHPUT_EVENTS events are ingested (held),
#     then `gatehouse resume` releases them and the sink times the deliveries.
#     Every delivery must end `succeeded` in the database.
#
# Usage: bench/deliver.sh
# Environment:
#   DURATION                       length of the latency run, default 10s
#   RATE                           events/s in the latency run, default 1000
#   DRAIN                          wait for late deliveries after it, default 5s
#   THROUGHPUT_EVENTS              events in the throughput run, default 50000
#   THROUGHPUT_TIMEOUT             seconds to wait for them all after resume,
#                                  default 60 + THROUGHPUT_EVENTS / 1000
#   E2E_CONCURRENCY                e2e sending connections, default 64 (each waits
#                                  for its ack: the rate is at most this / ack time)
#   INGEST_CONCURRENCY             loadgen connections filling the backlog, default 64
#   BODY_SIZE                      request body bytes, default 1024
#   DELIVERY_WORKERS               [delivery] workers; unset = the server default (256)
#   DESTINATION_CONCURRENCY        the destination's concurrency; unset = the default (16)
#   CARGO_TARGET_DIR               default /root/.cache/gatehouse-target
#   GATEHOUSE_BENCH_POSTGRES_URL   e.g. postgres://postgres@127.0.0.1:5432/postgres;
#                                  a fresh database is created and dropped per run
#   GATEHOUSE_BENCH_LOG            gatehouse --log filter, default info
#   SKIP_BUILD=1                   use the release binaries already built
#   KEEP=1                         keep the temp dir (configs, logs, JSON results)
#   STRICT=1                       exit 1 when a target is missed
#
# Targets (SQLite): end-to-end p50 <= 5 ms and p99 <= 25 ms at 1,000 events/s;
# >= 10,000 deliveries/s sustained. PostgreSQL figures are reported.
set -euo pipefail

DURATION=${DURATION:-10s}
RATE=${RATE:-1000}
DRAIN=${DRAIN:-5s}
THROUGHPUT_EVENTS=${THROUGHPUT_EVENTS:-50000}
THROUGHPUT_TIMEOUT=${THROUGHPUT_TIMEOUT:-$((60 + THROUGHPUT_EVENTS / 1000))}
INGEST_CONCURRENCY=${INGEST_CONCURRENCY:-64}
E2E_CONCURRENCY=${E2E_CONCURRENCY:-64}
BODY_SIZE=${BODY_SIZE:-1024}
DELIVERY_WORKERS=${DELIVERY_WORKERS:-}
DESTINATION_CONCURRENCY=${DESTINATION_CONCURRENCY:-}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/gatehouse-target}
export GATEHOUSE_BENCH_SECRET="whsec_benchSecret$$x$(date +%s)"
# The destination's Standard Webhooks secret: whsec_ + base64 of 24 random bytes.
DESTINATION_SECRET="whsec_$(head -c 24 /dev/urandom | base64 | tr -d '\n')"
PG_URL=${GATEHOUSE_BENCH_POSTGRES_URL:-}
LOG_FILTER=${GATEHOUSE_BENCH_LOG:-info}
ROUTE=stripe-to-sink

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-deliver-bench.XXXXXX")
running=() # children still running (gatehouse, sink)
pg_db=""
failures=0

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_exit PID SECONDS: waits for PID to exit; returns 1 on timeout.
wait_exit() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.02
    done
}

# calc EXPR [FORMAT]: evaluates an awk expression.
calc() {
    awk "BEGIN { printf \"${2:-%.1f}\", $1 }"
}

# free_port: a TCP port on 127.0.0.1 that nothing answers on.
free_port() {
    local i port
    for ((i = 0; i < 100; i++)); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "no free TCP port found"
}

# Storage of the current run: BACKEND is sqlite or postgres; DB the file or URL.
BACKEND=""
DB=""

# query SQL: one query against the current run's database, unaligned output.
query() {
    if [[ "$BACKEND" == sqlite ]]; then
        sqlite3 "$DB" "$1"
    else
        psql "$DB" -qAtX -v ON_ERROR_STOP=1 -c "$1"
    fi
}

# fresh_storage TAG: a new empty database for one run; sets BACKEND, DB, STORAGE_URL.
fresh_storage() {
    local tag=$1
    if [[ "$BACKEND" == sqlite ]]; then
        mkdir -p "$work/$tag"
        DB="$work/$tag/gatehouse.db"
        STORAGE_URL="sqlite://$DB"
    else
        drop_pg_db
        pg_db="gatehouse_bench_$$_$(date +%s)_${tag//-/_}"
        psql "$PG_URL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$pg_db\"" >/dev/null ||
            die "could not create database $pg_db via $PG_URL"
        local scheme=${PG_URL%%://*} rest=${PG_URL#*://} authority params=""
        authority=${rest%%/*}
        if [[ "$rest" == *\?* ]]; then
            params="?${rest#*\?}"
        fi
        DB="$scheme://$authority/$pg_db$params"
        STORAGE_URL=$DB
    fi
}


# write_config FILE SINK_URL PAUSED: gatehouse config for one run on STORAGE_URL.
write_config() {
    {
        cat <<EOF
[server]
listen = "127.0.0.1:0"

[storage]
url = "$STORAGE_URL"

[[sources]]
name = "stripe"
provider = "stripe"
secrets = ["env:GATEHOUSE_BENCH_SECRET"]

[[destinations]]
name = "sink"
type = "http"
url = "$2/hook"
secret = "$DESTINATION_SECRET"
EOF
        if [[ -n "$DESTINATION_CONCURRENCY" ]]; then
            echo "concurrency = $DESTINATION_CONCURRENCY"
        fi
        cat <<EOF

[[routes]]
name = "$ROUTE"
source = "stripe"
destination = "sink"
paused = $3
EOF
        if [[ -n "$DELIVERY_WORKERS" ]]; then
            printf '\n[delivery]\nworkers = %s\n' "$DELIVERY_WORKERS"
        fi
    } >"$1"
}

# start_gatehouse NAME CONFIG: starts gatehouse; sets GATEHOUSE_PID, GATEHOUSE_URL.
start_gatehouse() {
    start_server "$1" "gatehouse listening on" "$gatehouse" serve --config "$2" --log "$LOG_FILTER"
    GATEHOUSE_PID=$SERVER_PID
    GATEHOUSE_URL=$SERVER_URL
}

# wait_succeeded EXPECTED: waits (30 s at most) until EXPECTED deliveries are
# `succeeded` and no other state is left; prints the states; 1 if not.
wait_succeeded() {
    local expected=$1 i succeeded states
    for ((i = 0; i < 300; i++)); do
        succeeded=$(query "SELECT count(*) FROM deliveries WHERE state = 'succeeded'" | tr -d '[:space:]')
        [[ "$succeeded" == "$expected" ]] && break
        sleep 0.1
    done
    states=$(query "SELECT state || '=' || count(*) FROM deliveries GROUP BY state ORDER BY state" | tr '\n' ' ')
    echo "    deliveries by state: ${states:-none}" >&2
    DB_SUCCEEDED=$succeeded
    [[ "$succeeded" == "$expected" && "$states" == "succeeded=$expected " ]]
}

# problem MESSAGE: a correctness failure (the run is reported, the script fails).
problem() {
    echo "    ERROR: $*" >&2
    failures=$((failures + 1))
}

latency_rows=()
throughput_rows=()
declare -A result=()

# bench_latency LABEL: the paced end-to-end latency run.
bench_latency() {
    local label=$1 tag=${1,,}-latency
    fresh_storage "$tag"
    local port
    port=$(free_port)
    write_config "$work/$tag.toml" "http://127.0.0.1:$port" false
    echo "$label latency: gatehouse -> e2e sink on 127.0.0.1:$port" >&2
    start_gatehouse "gatehouse-$tag" "$work/$tag.toml"
    local json="$work/$tag.json"
    echo "  e2e: $RATE events/s for $DURATION, drain $DRAIN" >&2
    "$loadgen" e2e --url "$GATEHOUSE_URL/in/stripe" --sink-listen "127.0.0.1:$port" --rate "$RATE" \
        --concurrency "$E2E_CONCURRENCY" --duration "$DURATION" --drain "$DRAIN" --body-size "$BODY_SIZE" --json --allow-errors \
        >"$json" 2>"$work/$tag-e2e.err" || {
        cat "$work/$tag-e2e.err" >&2
        die "e2e failed for $label"
    }
    local sent acked arrived missing dup early bad
    sent=$(field "$json" sent)
    acked=$(field "$json" acked)
    arrived=$(field "$json" arrived)
    missing=$(field "$json" missing)
    dup=$(field "$json" duplicates)
    early=$(field "$json" arrived_before_ack)
    bad=$(($(field "$json" errors) + $(field "$json" non_2xx) + $(field "$json" not_accepted)))
    echo "    sent $sent, acked $acked, arrived $arrived, missing $missing, duplicates $dup," \
        "arrived before ack $early; p50 $(field "$json" p50_ms) ms, p99 $(field "$json" p99_ms) ms" >&2
    ((acked > 0)) || problem "no event was acknowledged (see $work/gatehouse-$tag.err)"
    ((bad == 0)) || problem "$bad request(s) failed or were not accepted"
    ((missing == 0)) || problem "$missing acknowledged event(s) never reached the sink"
    (($(field "$json" unexpected) == 0)) || problem "$(field "$json" unexpected) unexpected id(s) reached the sink"
    ((dup == 0)) || echo "    WARNING: $dup duplicate deliveries (allowed by at-least-once)" >&2
    local ack_rate
    ack_rate=$(calc "$(field "$json" ack_rate)" %.0f)
    if calc "$ack_rate < 0.95 * $RATE" %d | grep -q 1; then
        echo "    WARNING: only $ack_rate events/s were acknowledged, short of $RATE/s" \
            "(ack p99 $(field "$json" ack_p99_ms) ms; raise E2E_CONCURRENCY)" >&2
    fi
    wait_succeeded "$acked" || problem "expected $acked succeeded deliveries, found $DB_SUCCEEDED"
    stop_process "$GATEHOUSE_PID"
    drop_pg_db
    latency_rows+=("| $label | $RATE/s for $DURATION | $ack_rate/s | $acked | $arrived | $missing | $dup | $early |\
 $(field "$json" p50_ms) | $(field "$json" p90_ms) | $(field "$json" p99_ms) | $(field "$json" max_ms) |")
    result[${label,,}.p50]=$(field "$json" p50_ms)
    result[${label,,}.p99]=$(field "$json" p99_ms)
}

# bench_throughput LABEL: the backlog-release throughput run.
bench_throughput() {
    local label=$1 tag=${1,,}-throughput n=$THROUGHPUT_EVENTS
    fresh_storage "$tag"
    echo "$label throughput: $n events held on a paused route, then resumed" >&2
    start_server "sink-$tag" "sink listening on" "$loadgen" sink --listen 127.0.0.1:0 --expect "$n" --json
    local sink_pid=$SERVER_PID sink_url=$SERVER_URL sink_out="$work/sink-$tag.out"
    write_config "$work/$tag.toml" "$sink_url" true
    start_gatehouse "gatehouse-$tag" "$work/$tag.toml"

    local ingest="$work/$tag-ingest.json"
    echo "  ingest: $n events, concurrency $INGEST_CONCURRENCY" >&2
    "$loadgen" loadgen --url "$GATEHOUSE_URL/in/stripe" --requests "$n" --concurrency "$INGEST_CONCURRENCY" \
        --body-size "$BODY_SIZE" --json --allow-errors >"$ingest" || die "loadgen failed for $label"
    local ok
    ok=$(field "$ingest" status_2xx)
    echo "    $ok of $n acknowledged at $(field "$ingest" ok_rate) 2xx/s" >&2
    ((ok == n)) || die "$label: only $ok of $n events were acknowledged; cannot time $n deliveries"
    local held
    held=$(query "SELECT count(*) FROM deliveries WHERE state = 'pending'" | tr -d '[:space:]')
    echo "    deliveries held on the paused route: $held" >&2
    [[ "$held" == "$n" ]] || problem "expected $n pending deliveries before resume, found $held"

    local resumed_at
    resumed_at=$(date +%s.%N)
    "$gatehouse" --log warn resume --config "$work/$tag.toml" "$ROUTE" >"$work/$tag-resume.out" 2>&1 || {
        cat "$work/$tag-resume.out" >&2
        die "gatehouse resume failed"
    }
    echo "  $(cat "$work/$tag-resume.out")" >&2
    if ! wait_exit "$sink_pid" "$THROUGHPUT_TIMEOUT"; then
        problem "the sink did not get $n distinct deliveries within ${THROUGHPUT_TIMEOUT}s of resume"
        stop_process "$sink_pid" # it reports what it got on SIGTERM
    fi
    forget "$sink_pid"
    wait "$sink_pid" 2>/dev/null || true
    local distinct dup span rate first last_new resume_to_all incl
    distinct=$(field "$sink_out" distinct)
    [[ -n "$distinct" ]] || die "the sink printed no report (see $work/sink-$tag.err)"
    dup=$(field "$sink_out" duplicates)
    span=$(field "$sink_out" span_s)
    rate=$(field "$sink_out" rate)
    first=$(field "$sink_out" first_arrival_unix)
    last_new=$(field "$sink_out" last_new_arrival_unix)
    [[ "$rate" != null ]] || rate=0
    [[ "$span" != null ]] || span=0
    if [[ "$first" != null ]]; then
        resume_to_all=$(calc "$last_new - $resumed_at" %.3f)
        incl=$(calc "$distinct / ($last_new - $resumed_at)" %.0f)
        if calc "$first < $resumed_at" %d | grep -q 1; then
            problem "a delivery arrived before the route was resumed"
        fi
    else
        resume_to_all="—"
        incl=0
    fi
    echo "    sink: $distinct distinct, $dup duplicates, first->last new ${span}s = $(calc "$rate" %.0f)/s;" \
        "resume->all ${resume_to_all}s = $incl/s" >&2
    echo "    per second: $(sed -n 's/.*"per_second":\[\([^]]*\)\].*/\1/p' "$sink_out" | tr ',' ' ')" >&2
    ((distinct == n)) || problem "$distinct of $n distinct deliveries reached the sink"
    ((dup == 0)) || echo "    WARNING: $dup duplicate deliveries (allowed by at-least-once)" >&2
    wait_succeeded "$n" || problem "expected $n succeeded deliveries, found $DB_SUCCEEDED"
    stop_process "$GATEHOUSE_PID"
    drop_pg_db
    throughput_rows+=("| $label | $n | $distinct | $dup | $(calc "$span" %.3f) | $(calc "$rate" %.0f) |\
 $resume_to_all | $incl | $DB_SUCCEEDED |")
    result[${label,,}.rate]=$rate
}

command -v sqlite3 >/dev/null || die "sqlite3 CLI not found"
if [[ -n "$PG_URL" ]]; then
    command -v psql >/dev/null || die "psql not found (needed for GATEHOUSE_BENCH_POSTGRES_URL)"
fi

loadgen="$CARGO_TARGET_DIR/release/gatehouse-loadgen"
gatehouse="$CARGO_TARGET_DIR/release/gatehouse"
if [[ "${SKIP_BUILD:-0}" == 1 ]]; then
    [[ -x "$loadgen" && -x "$gatehouse" ]] || die "SKIP_BUILD=1 but $loadgen or $gatehouse is missing"
else
    echo "building (release) in $CARGO_TARGET_DIR" >&2
    (cd "$root" && cargo build --release -p gatehouse -p gatehouse-loadgen) || die "build failed"
fi

workers_note=${DELIVERY_WORKERS:-256 (default)}
concurrency_note=${DESTINATION_CONCURRENCY:-16 (default)}
echo "machine: $(nproc) CPUs; delivery workers $workers_note, destination concurrency $concurrency_note" >&2

# (a) + (b) on SQLite.
BACKEND=sqlite
bench_latency SQLite
bench_throughput SQLite

# (c) the same on PostgreSQL, a fresh database per run.
if [[ -n "$PG_URL" ]]; then
    BACKEND=postgres
    bench_latency PostgreSQL
    bench_throughput PostgreSQL
fi

# (d) Results.
echo
echo "### gatehouse delivery benchmark ($(nproc) CPUs, $BODY_SIZE-byte signed Stripe events," \
    "delivery workers $workers_note, destination concurrency $concurrency_note)"
echo
echo "End-to-end latency: ingest ack -> arrival at a local sink (same monotonic clock; an event that"
echo "arrives before its ack counts as 0 ms)."
echo
echo "| storage | load | acked rate | acked | arrived | missing | duplicates | arrived before ack | p50 ms | p90 ms | p99 ms | max ms |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${latency_rows[@]}"
echo
echo "Delivery throughput: a backlog held on a paused route, released with \`gatehouse resume\`."
echo "Sustained = distinct arrivals over first -> last arrival; \"incl. resume\" also counts the"
echo "resume command and the server noticing it (up to delivery.poll_interval, 1 s, on SQLite)."
echo
echo "| storage | events | distinct arrivals | duplicates | first -> last s | deliveries/s sustained | resume -> last s | deliveries/s incl. resume | DB succeeded |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${throughput_rows[@]}"
echo

missed=0
# check NAME VALUE OP LIMIT: prints PASS/FAIL for one target.
check() {
    if awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN { exit !((op == ">=") ? v >= l : v <= l) }'; then
        echo "- PASS $1: $2 $3 $4"
    else
        echo "- FAIL $1: $2 (target $3 $4)"
        missed=$((missed + 1))
    fi
}
check "SQLite end-to-end p50 at $RATE events/s (ms)" "${result[sqlite.p50]}" "<=" 5
check "SQLite end-to-end p99 at $RATE events/s (ms)" "${result[sqlite.p99]}" "<=" 25
check "SQLite sustained deliveries/s" "$(printf '%.0f' "${result[sqlite.rate]}")" ">=" 10000
if [[ -n "$PG_URL" ]]; then
    echo "- PostgreSQL (reported, no target): end-to-end p50 ${result[postgresql.p50]} ms," \
        "p99 ${result[postgresql.p99]} ms at $RATE events/s;" \
        "$(printf '%.0f' "${result[postgresql.rate]}") deliveries/s sustained"
fi

if ((failures > 0)); then
    die "$failures check(s) failed (missing, unexpected or unsucceeded deliveries, failed requests); rerun with KEEP=1 to inspect logs"
fi
if ((missed > 0)) && [[ "${STRICT:-0}" == 1 ]]; then
    die "$missed target(s) missed"
fi
