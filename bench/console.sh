#!/usr/bin/env bash
# Console and API benchmark: with EVENTS events stored (default 1,000,000),
# how long the events page and the API's first page take, server side, for
# the unfiltered list, a filter by source and type, and a lookup by provider
# event id. The server reports its own handler time in `Server-Timing`; the
# script takes the median of ROUNDS requests per query.
#
# Usage: bench/console.sh
# Environment:
#   EVENTS                         events to store first, default 1000000
#   ROUNDS                         requests per query, default 21
#   CARGO_TARGET_DIR               default /root/.cache/gatehouse-target
#   GATEHOUSE_BENCH_POSTGRES_URL   also measure PostgreSQL (a fresh database
#                                  is created and dropped)
#   SKIP_BUILD=1                   use the release binaries already built
#   KEEP=1                         keep the temp dir
#
# Target (issue "Operations console"): every median <= 50 ms.
set -euo pipefail

EVENTS=${EVENTS:-1000000}
ROUNDS=${ROUNDS:-21}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/gatehouse-target}
export GATEHOUSE_BENCH_SECRET="whsec_benchSecret$$x$(date +%s)"
PG_URL=${GATEHOUSE_BENCH_POSTGRES_URL:-}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-console-bench.XXXXXX")
running=()
pg_db=""

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

trap cleanup EXIT
trap 'exit 130' INT TERM

loadgen="$CARGO_TARGET_DIR/release/gatehouse-loadgen"
gatehouse="$CARGO_TARGET_DIR/release/gatehouse"
if [[ "${SKIP_BUILD:-0}" == 1 ]]; then
    [[ -x "$loadgen" && -x "$gatehouse" ]] || die "SKIP_BUILD=1 but $loadgen or $gatehouse is missing"
else
    echo "building (release) in $CARGO_TARGET_DIR" >&2
    (cd "$root" && cargo build --release -p gatehouse -p gatehouse-loadgen) || die "build failed"
fi
command -v curl >/dev/null || die "curl not found"

# server_ms URL AUTH...: the handler time the server reported for one GET.
server_ms() {
    local url=$1
    shift
    curl -s -o /dev/null -D - "$@" "$url" | tr -d '\r' |
        sed -n 's/^server-timing: app;dur=\([0-9.]*\).*/\1/Ip'
}

# median_ms URL AUTH...: the median of ROUNDS server times (after one warm-up).
median_ms() {
    local i values=()
    server_ms "$@" >/dev/null
    for ((i = 0; i < ROUNDS; i++)); do
        values+=("$(server_ms "$@")")
    done
    printf '%s\n' "${values[@]}" | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0 || v[1] == "") exit 1; print v[int((NR + 1) / 2)] }' ||
        die "no Server-Timing header from $1"
}

rows=()
worst=0

bench_backend() {
    local label=$1 storage=$2 tag=${1,,}
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

[[sources]]
name = "shop"
provider = "stripe"
secrets = ["env:GATEHOUSE_BENCH_SECRET"]

[delivery]
enabled = false
EOF
    echo "$label: storing $EVENTS events through /in (3/4 stripe, 1/4 shop)" >&2
    start_server "gatehouse-$tag" "gatehouse listening on" "$gatehouse" serve --config "$config" --log warn
    local pid=$SERVER_PID url=$SERVER_URL
    local shop=$((EVENTS / 4))
    "$loadgen" loadgen --url "$url/in/stripe" --requests $((EVENTS - shop)) --json >"$work/$tag-fill1.json" ||
        die "loadgen failed"
    "$loadgen" loadgen --url "$url/in/shop" --requests "$shop" --json >"$work/$tag-fill2.json" ||
        die "loadgen failed"
    echo "  stored at $(field "$work/$tag-fill1.json" ok_rate) acks/s" >&2

    local token
    token=$("$gatehouse" tokens create --config "$config" --log warn bench --role viewer 2>/dev/null |
        grep -o 'ghk_[A-Za-z0-9_-]*' | head -n 1)
    [[ -n "$token" ]] || die "could not create an API token"
    printf '%s\n' "bench console password" |
        "$gatehouse" users add --config "$config" --log warn bencher --role viewer --password-stdin >/dev/null 2>&1 ||
        die "could not create a console user"
    curl -s -o /dev/null -c "$work/$tag.cookies" -H "Origin: $url" \
        --data-urlencode username=bencher --data-urlencode "password=bench console password" \
        "$url/console/login"
    grep -q gatehouse_session "$work/$tag.cookies" || die "console login failed"

    # The newest shop event's provider id: the lookup goes through the
    # (source, dedup key) index whatever the id, so any stored one will do.
    local provider_id
    provider_id=$(curl -s -H "Authorization: Bearer $token" "$url/api/v1/events?source=shop&limit=1" |
        sed -n 's/.*"provider_event_id":"\([^"]*\)".*/\1/p' | head -n 1)
    [[ -n "$provider_id" ]] || die "no provider id found"

    local api=(-H "Authorization: Bearer $token") page=(-b "$work/$tag.cookies")
    local name path ms
    for name in "unfiltered" "source + type" "provider id"; do
        case $name in
        unfiltered) path="events" ;;
        "source + type") path="events?source=shop&type=payment_intent.succeeded" ;;
        "provider id") path="lookup?provider_id=$provider_id" ;;
        esac
        ms=$(median_ms "$url/api/v1/$path" "${api[@]}")
        rows+=("| $label | API \`/api/v1/$path\` | $ms |")
        awk -v m="$ms" -v w="$worst" 'BEGIN { exit !(m > w) }' && worst=$ms
        case $name in
        unfiltered) path="events" ;;
        "source + type") path="events?source=shop&type=payment_intent.succeeded" ;;
        "provider id") path="events?provider_id=$provider_id" ;;
        esac
        ms=$(median_ms "$url/console/$path" "${page[@]}")
        rows+=("| $label | page \`/console/$path\` | $ms |")
        awk -v m="$ms" -v w="$worst" 'BEGIN { exit !(m > w) }' && worst=$ms
    done
    stop_process "$pid"
}

bench_backend "SQLite" "sqlite://$work/gatehouse.db"
if [[ -n "$PG_URL" ]]; then
    command -v psql >/dev/null || die "psql not found"
    pg_db="gatehouse_console_bench_$$"
    psql "$PG_URL" -qX -c "CREATE DATABASE \"$pg_db\"" >/dev/null
    bench_backend "PostgreSQL" "${PG_URL%/*}/$pg_db"
fi

echo
echo "$EVENTS events stored; median of $ROUNDS requests, server side (Server-Timing), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| backend | request | median ms |"
echo "| --- | --- | ---: |"
printf '%s\n' "${rows[@]}"
echo
echo "slowest median: $worst ms (target <= 50 ms)"
