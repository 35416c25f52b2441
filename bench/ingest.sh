#!/usr/bin/env bash
# Ingest benchmark: signed ~1 KB Stripe events at concurrency 64 against a
# bare hyper server (the machine's limit), then against gatehouse on SQLite
# (and PostgreSQL when GATEHOUSE_BENCH_POSTGRES_URL is set), all in one run.
#
# Usage: bench/ingest.sh
# Environment:
#   DURATION                       length of each load, default 10s
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
declare -A result=()

# row LABEL JSON RATIO RSS: one line of the results table.
row() {
    local json=$2 rate bad
    rate=$(printf '%.0f' "$(field "$json" ok_rate)")
    bad=$(($(field "$json" requests) - $(field "$json" status_2xx)))
    rows+=("| $1 | $rate | $(field "$json" p50_ms) | $(field "$json" p99_ms) | $bad | $3 | $4 |")
}

# bench_gatehouse LABEL STORAGE_URL COUNT_CMD...: starts gatehouse on the
# storage, runs the peak and the half-rate loads, checks the stored row count.
bench_gatehouse() {
    local label=$1 storage=$2 tag
    shift 2
    tag=${label,,}
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
    echo "gatehouse on $label" >&2
    start_server "gatehouse-$tag" "gatehouse listening on" \
        "$gatehouse" serve --config "$config" --log "$LOG_FILTER"
    local pid=$SERVER_PID url="$SERVER_URL/in/stripe"
    load "$tag-peak" "$url"
    local half
    half=$(awk -v r="$(field "$work/$tag-peak.json" ok_rate)" 'BEGIN { printf "%.0f", r / 2 }')
    ((half > 0)) || die "gatehouse on $label acknowledged nothing (see $work/gatehouse-$tag.err)"
    load "$tag-half" "$url" --rate "$half"
    local rss
    rss=$(peak_rss_mb "$pid")
    stop_process "$pid"

    local acked stored
    acked=$(($(field "$work/$tag-peak.json" status_2xx) + $(field "$work/$tag-half.json" status_2xx)))
    stored=$("$@" | tr -d '[:space:]')
    if [[ "$stored" == "$acked" ]]; then
        echo "  rows in events: $stored = 2xx answers" >&2
    else
        echo "  ERROR: $acked 2xx answers but $stored rows in events" >&2
        failures=$((failures + 1))
    fi

    local ratio
    ratio=$(awk -v g="$(field "$work/$tag-peak.json" ok_rate)" -v b="$bare_rate" \
        'BEGIN { printf "%.1f %%", 100 * g / b }')
    row "gatehouse $label, c=$CONCURRENCY" "$work/$tag-peak.json" "$ratio" "$rss MB"
    row "gatehouse $label, paced at $half/s (half peak)" "$work/$tag-half.json" "—" "—"
    result[$tag.rate]=$(field "$work/$tag-peak.json" ok_rate)
    result[$tag.half_p99]=$(field "$work/$tag-half.json" p99_ms)
    result[$tag.rss]=$rss
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

echo "machine: $(nproc) CPUs; load: concurrency $CONCURRENCY, $DURATION per run, $BODY_SIZE-byte bodies" >&2

# (a) The bare hyper server: the machine's limit.
echo "bare hyper server" >&2
start_server bare "bare listening on" "$loadgen" bare --listen 127.0.0.1:0
bare_pid=$SERVER_PID
load bare "$SERVER_URL/in/stripe"
bare_rss=$(peak_rss_mb "$bare_pid")
stop_process "$bare_pid"
bare_rate=$(field "$work/bare.json" ok_rate)
awk -v b="$bare_rate" 'BEGIN { exit !(b > 0) }' || die "the bare server answered nothing"
row "bare hyper, c=$CONCURRENCY" "$work/bare.json" "100 %" "$bare_rss MB"

# (b) gatehouse on SQLite.
mkdir -p "$work/sqlite"
db="$work/sqlite/gatehouse.db"
bench_gatehouse SQLite "sqlite://$db" sqlite3 "$db" "SELECT count(*) FROM events"

# (c) gatehouse on PostgreSQL, in a fresh database.
if [[ -n "$PG_URL" ]]; then
    pg_db="gatehouse_bench_$$_$(date +%s)"
    psql "$PG_URL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$pg_db\"" >/dev/null ||
        die "could not create database $pg_db via $PG_URL"
    scheme=${PG_URL%%://*}
    rest=${PG_URL#*://}
    authority=${rest%%/*}
    query=""
    [[ "$rest" == *\?* ]] && query="?${rest#*\?}"
    pg_bench_url="$scheme://$authority/$pg_db$query"
    bench_gatehouse PostgreSQL "$pg_bench_url" psql "$pg_bench_url" -qAtX -c "SELECT count(*) FROM events"
fi

# (d) Results.
echo
echo "### gatehouse ingest benchmark ($(nproc) CPUs, c=$CONCURRENCY, $DURATION per run, $BODY_SIZE-byte signed Stripe events)"
echo
echo "| target | rate (2xx/s) | p50 ms | p99 ms | non-2xx | vs bare | peak RSS |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
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
share=$(awk -v g="${result[sqlite.rate]}" -v b="$bare_rate" 'BEGIN { printf "%.1f", 100 * g / b }')
check "SQLite durable acks/s" "$(printf '%.0f' "${result[sqlite.rate]}")" ">=" 20000
check "SQLite share of the bare rate (%)" "$share" ">=" 40
check "SQLite p99 at half the peak rate (ms)" "${result[sqlite.half_p99]}" "<=" 15
check "SQLite peak RSS (MB)" "${result[sqlite.rss]}" "<=" 150
if [[ -n "$PG_URL" ]]; then
    echo "- PostgreSQL (reported, no target): $(printf '%.0f' "${result[postgresql.rate]}") durable acks/s," \
        "p99 ${result[postgresql.half_p99]} ms at half the peak rate, peak RSS ${result[postgresql.rss]} MB"
fi

if ((failures > 0)); then
    die "$failures check(s) failed (non-2xx answers or stored rows != acks); rerun with KEEP=1 to inspect logs"
fi
if ((missed > 0)) && [[ "${STRICT:-0}" == 1 ]]; then
    die "$missed target(s) missed"
fi
