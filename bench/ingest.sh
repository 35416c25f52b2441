#!/usr/bin/env bash
# Ingest benchmark: signed ~1 KB Stripe events at concurrency 64 against a
# bare hyper server (the machine's limit), then against gatehouse on SQLite
# (and PostgreSQL when GATEHOUSE_BENCH_POSTGRES_URL is set), all in one run.
#
# The bare server and gatehouse on SQLite take turns for ROUNDS rounds, each
# SQLite round on a fresh database (the half-rate load then runs on the last
# one), and the targets are checked against the medians: the machine is shared and its speed drifts by a quarter within
# minutes, so one pair measured a minute apart can move the share by several
# points either way.
#
# Usage: bench/ingest.sh
# Environment:
#   DURATION                       length of each load, default 10s
#   ROUNDS                         bare/SQLite pairs, default 3
#   CONCURRENCY                    workers/connections, default 64
#   BODY_SIZE                      request body bytes, default 1024
#   CARGO_TARGET_DIR               default /root/.cache/gatehouse-target
#   GATEHOUSE_BENCH_POSTGRES_URL   e.g. postgres://postgres@127.0.0.1:5432/postgres;
#                                  a fresh database is created and dropped per run
#   GATEHOUSE_BENCH_LOG            gatehouse --log filter, default info
#   SKIP_BUILD=1                   use the release binaries already built
#   KEEP=1                         keep the temp dir (configs, logs, JSON results)
#   STRICT=1                       exit 1 when a target is missed
#
# Targets (2-core machine): >= 20000 durable acks/s on SQLite, >= 40 % of the
# bare server's rate, p99 <= 15 ms at half the peak rate, RSS <= 150 MB.
set -euo pipefail

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-64}
BODY_SIZE=${BODY_SIZE:-1024}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/gatehouse-target}
export GATEHOUSE_BENCH_SECRET="whsec_benchSecret$$x$(date +%s)"
PG_URL=${GATEHOUSE_BENCH_POSTGRES_URL:-}
LOG_FILTER=${GATEHOUSE_BENCH_LOG:-info}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-bench.XXXXXX")
running=() # children still running
pg_db=""
failures=0

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

trap cleanup EXIT
trap 'exit 130' INT TERM

# peak_rss_mb PID: the process's peak resident set (VmHWM) in MiB.
peak_rss_mb() {
    awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"
}

# load NAME URL [ARGS...]: one loadgen run, its JSON line saved as NAME.json.
load() {
    local name=$1 url=$2
    shift 2
    echo "  $name: $url $*" >&2
    "$loadgen" loadgen --url "$url" --concurrency "$CONCURRENCY" --duration "$DURATION" \
        --body-size "$BODY_SIZE" --json --allow-errors "$@" >"$work/$name.json" ||
        die "loadgen failed for $name"
    local bad
    bad=$(($(field "$work/$name.json" requests) - $(field "$work/$name.json" status_2xx)))
    echo "    $(field "$work/$name.json" ok_rate) 2xx/s, p50 $(field "$work/$name.json" p50_ms) ms," \
        "p99 $(field "$work/$name.json" p99_ms) ms, non-2xx/errors $bad" >&2
    if ((bad > 0)); then
        echo "    WARNING: $bad request(s) failed or were answered non-2xx" >&2
        failures=$((failures + 1))
    fi
}

rows=()

# row LABEL JSON RATIO RSS: one line of the results table.
row() {
    local json=$2 rate bad
    rate=$(printf '%.0f' "$(field "$json" ok_rate)")
    bad=$(($(field "$json" requests) - $(field "$json" status_2xx)))
    rows+=("| $1 | $rate | $(field "$json" p50_ms) | $(field "$json" p99_ms) | $bad | $3 | $4 |")
}

# start_gatehouse TAG STORAGE_URL: writes a config for STORAGE_URL and starts
# gatehouse on it. Sets SERVER_PID and SERVER_URL.
start_gatehouse() {
    local tag=$1 storage=$2
    local config="$work/$tag.toml"
    cat >"$config" <<EOF
[server]
listen = "127.0.0.1:0"

[storage]
url = "$storage"

[[sources]]
name = "stripe"
provider = "stripe"
secrets = ["env:GATEHOUSE_BENCH_SECRET"]
EOF
    start_server "gatehouse-$tag" "gatehouse listening on" \
        "$gatehouse" serve --config "$config" --log "$LOG_FILTER"
}

# check_rows LABEL JSON BEFORE COUNT_CMD...: the rows in events must equal
# BEFORE (rows already there) plus the 2xx answers of the load saved in JSON.
check_rows() {
    local label=$1 acked stored
    acked=$(($3 + $(field "$2" status_2xx)))
    shift 3
    stored=$("$@" | tr -d '[:space:]')
    if [[ "$stored" == "$acked" ]]; then
        echo "  rows in events: $stored = 2xx answers" >&2
    else
        echo "  ERROR ($label): $acked 2xx answers but $stored rows in events" >&2
        failures=$((failures + 1))
    fi
}

# run_bare NAME: one load against a fresh bare server. Sets RATE and RSS.
run_bare() {
    start_server "$1" "bare listening on" "$loadgen" bare --listen 127.0.0.1:0
    local pid=$SERVER_PID
    load "$1" "$SERVER_URL/in/stripe"
    RSS=$(peak_rss_mb "$pid")
    stop_process "$pid"
    RATE=$(field "$work/$1.json" ok_rate)
    awk -v r="$RATE" 'BEGIN { exit !(r > 0) }' || die "the bare server answered nothing"
}

# run_gatehouse TAG STORAGE_URL PACE BEFORE COUNT_CMD...: one load against
# gatehouse on a store holding BEFORE events, at full concurrency (PACE "")
# or paced at PACE requests a second; then checks the stored rows. Sets
# RATE, RSS and ACKED.
run_gatehouse() {
    local tag=$1 storage=$2 pace=$3 before=$4
    shift 4
    start_gatehouse "$tag" "$storage"
    local pid=$SERVER_PID
    if [[ -n "$pace" ]]; then
        load "$tag" "$SERVER_URL/in/stripe" --rate "$pace"
    else
        load "$tag" "$SERVER_URL/in/stripe"
    fi
    RSS=$(peak_rss_mb "$pid")
    stop_process "$pid"
    RATE=$(field "$work/$tag.json" ok_rate)
    awk -v r="$RATE" 'BEGIN { exit !(r > 0) }' ||
        die "gatehouse ($tag) acknowledged nothing (see $work/gatehouse-$tag.err)"
    ACKED=$(field "$work/$tag.json" status_2xx)
    check_rows "$tag" "$work/$tag.json" "$before" "$@"
}

# median VALUES...: the median (the mean of the middle two for an even count).
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# share RATE BARE: RATE as a percentage of BARE, one decimal.
share() {
    awk -v g="$1" -v b="$2" 'BEGIN { printf "%.1f", 100 * g / b }'
}

# pg_fresh: a fresh database on PG_URL. Sets pg_db and PG_BENCH_URL.
pg_fresh() {
    pg_db="gatehouse_bench_$$_$(date +%s%N)"
    psql "$PG_URL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$pg_db\"" >/dev/null ||
        die "could not create database $pg_db via $PG_URL"
    local scheme=${PG_URL%%://*} rest=${PG_URL#*://} authority query=""
    authority=${rest%%/*}
    [[ "$rest" == *\?* ]] && query="?${rest#*\?}"
    PG_BENCH_URL="$scheme://$authority/$pg_db$query"
}

# pg_checkpoints: the PostgreSQL server's checkpoint counters, timed and
# requested (pg_stat_checkpointer from PostgreSQL 17, pg_stat_bgwriter
# before).
pg_checkpoints() {
    psql "$PG_URL" -qAtX -c "SELECT num_timed + num_requested FROM pg_stat_checkpointer" 2>/dev/null ||
        psql "$PG_URL" -qAtX -c "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter" ||
        die "could not read PostgreSQL's checkpoint counters via $PG_URL"
}

command -v sqlite3 >/dev/null || die "sqlite3 CLI not found"
if [[ -n "$PG_URL" ]]; then
    command -v psql >/dev/null || die "psql not found (needed for GATEHOUSE_BENCH_POSTGRES_URL)"
fi
((ROUNDS >= 1)) || die "ROUNDS must be at least 1"

loadgen="$CARGO_TARGET_DIR/release/gatehouse-loadgen"
gatehouse="$CARGO_TARGET_DIR/release/gatehouse"
if [[ "${SKIP_BUILD:-0}" == 1 ]]; then
    [[ -x "$loadgen" && -x "$gatehouse" ]] || die "SKIP_BUILD=1 but $loadgen or $gatehouse is missing"
else
    echo "building (release) in $CARGO_TARGET_DIR" >&2
    (cd "$root" && cargo build --release -p gatehouse -p gatehouse-loadgen) || die "build failed"
fi

echo "machine: $(nproc) CPUs; load: concurrency $CONCURRENCY, $DURATION per run, $BODY_SIZE-byte bodies," \
    "$ROUNDS rounds" >&2

# (a) The bare hyper server (the machine's limit) and gatehouse on SQLite,
# taking turns.
bare_rates=()
sqlite_rates=()
sqlite_shares=()
sqlite_rss=0
for ((round = 1; round <= ROUNDS; round++)); do
    echo "round $round of $ROUNDS: bare hyper server, then gatehouse on SQLite" >&2
    run_bare "bare-$round"
    bare_rate=$RATE
    bare_rates+=("$bare_rate")
    row "bare hyper, c=$CONCURRENCY, round $round" "$work/bare-$round.json" "100 %" "$RSS MB"
    mkdir -p "$work/sqlite-$round"
    db="$work/sqlite-$round/gatehouse.db"
    run_gatehouse "sqlite-$round" "sqlite://$db" "" 0 sqlite3 "$db" "SELECT count(*) FROM events"
    sqlite_rates+=("$RATE")
    sqlite_shares+=("$(share "$RATE" "$bare_rate")")
    ((RSS > sqlite_rss)) && sqlite_rss=$RSS
    row "gatehouse SQLite, c=$CONCURRENCY, round $round" "$work/sqlite-$round.json" \
        "$(share "$RATE" "$bare_rate") %" "$RSS MB"
done
bare_median=$(median "${bare_rates[@]}")
sqlite_median=$(median "${sqlite_rates[@]}")
share_median=$(median "${sqlite_shares[@]}")

# (b) SQLite paced at half the median peak, on the last round's database
# (not an empty one).
half=$(awk -v r="$sqlite_median" 'BEGIN { printf "%.0f", r / 2 }')
echo "gatehouse on SQLite, paced at $half/s" >&2
run_gatehouse sqlite-half "sqlite://$db" "$half" "$ACKED" sqlite3 "$db" "SELECT count(*) FROM events"
row "gatehouse SQLite, paced at $half/s (half the median peak)" "$work/sqlite-half.json" "—" "—"
sqlite_half_p99=$(field "$work/sqlite-half.json" p99_ms)

# (c) gatehouse on PostgreSQL (reported, no target): one peak load and one
# paced at half of it, in one fresh database.
if [[ -n "$PG_URL" ]]; then
    echo "gatehouse on PostgreSQL" >&2
    pg_fresh
    run_gatehouse postgresql "$PG_BENCH_URL" "" 0 psql "$PG_BENCH_URL" -qAtX -c "SELECT count(*) FROM events"
    pg_rate=$RATE
    pg_rss=$RSS
    row "gatehouse PostgreSQL, c=$CONCURRENCY" "$work/postgresql.json" \
        "$(share "$pg_rate" "$bare_median") % of the median bare" "$pg_rss MB"
    pg_half=$(awk -v r="$pg_rate" 'BEGIN { printf "%.0f", r / 2 }')
    checkpoints_before=$(pg_checkpoints)
    run_gatehouse postgresql-half "$PG_BENCH_URL" "$pg_half" "$ACKED" \
        psql "$PG_BENCH_URL" -qAtX -c "SELECT count(*) FROM events"
    pg_half_checkpoints=$(($(pg_checkpoints) - checkpoints_before))
    drop_pg_db
    row "gatehouse PostgreSQL, paced at $pg_half/s (half peak)" "$work/postgresql-half.json" "—" "—"
    pg_half_p99=$(field "$work/postgresql-half.json" p99_ms)
fi

# (d) Results.
echo
echo "### gatehouse ingest benchmark ($(nproc) CPUs, c=$CONCURRENCY, $DURATION per run," \
    "$BODY_SIZE-byte signed Stripe events, $ROUNDS rounds)"
echo
echo "| target | rate (2xx/s) | p50 ms | p99 ms | non-2xx | vs bare | peak RSS |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
echo
echo "Medians of $ROUNDS rounds: bare $(printf '%.0f' "$bare_median")/s, SQLite $(printf '%.0f' "$sqlite_median")/s;" \
    "SQLite's share of its round's bare rate: $share_median % (rounds: ${sqlite_shares[*]/%/ %})."
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
check "SQLite durable acks/s (median)" "$(printf '%.0f' "$sqlite_median")" ">=" 20000
check "SQLite share of the bare rate (%, median)" "$share_median" ">=" 40
check "SQLite p99 at half the median peak rate (ms)" "$sqlite_half_p99" "<=" 15
check "SQLite peak RSS (MB, largest round)" "$sqlite_rss" "<=" 150
if [[ -n "$PG_URL" ]]; then
    echo "- PostgreSQL (reported, no target): $(printf '%.0f' "$pg_rate") durable acks/s," \
        "p99 $pg_half_p99 ms at half the peak rate, peak RSS $pg_rss MB;" \
        "PostgreSQL's checkpoint counters rose by $pg_half_checkpoints during the half-rate load" \
        "(a checkpoint can stall commits for tens of milliseconds)"
fi

if ((failures > 0)); then
    die "$failures check(s) failed (non-2xx answers or stored rows != acks); rerun with KEEP=1 to inspect logs"
fi
if ((missed > 0)) && [[ "${STRICT:-0}" == 1 ]]; then
    die "$missed target(s) missed"
fi
