#!/usr/bin/env bash
# Builds every fuzz target and runs each one briefly from its seed corpus.
# Exits non-zero if a target fails to build or finds a crash (the input is
# left in fuzz/artifacts/<target>/). See fuzz/README.md.
#
#   fuzz/smoke.sh                      # every target, 5 s each
#   FUZZ_SECONDS=60 fuzz/smoke.sh      # longer
#   fuzz/smoke.sh headers asymmetric   # some targets
#
# Environment:
#   FUZZ_SECONDS                 seconds per target (default 5)
#   FUZZ_SANITIZER               none (default) or address
#   FUZZ_STRICT=1                also fail when a registered provider could
#                                not be built with the harness's fixed configs
#   GATEHOUSE_FUZZ_TARGET_DIR    build directory (default
#                                ~/.cache/gatehouse-fuzz-target, apart from the
#                                main target/ so sanitizer builds never evict it)
set -euo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$FUZZ_DIR/.."

SECONDS_PER_TARGET="${FUZZ_SECONDS:-5}"
SANITIZER="${FUZZ_SANITIZER:-none}"
ALL_TARGETS=(headers hmac_family token_family asymmetric json_identify)
if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=("${ALL_TARGETS[@]}")
fi

# cargo-fuzz passes nightly-only flags (-Zsanitizer=..., -Cllvm-args for
# SanitizerCoverage); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${GATEHOUSE_FUZZ_TARGET_DIR:-$HOME/.cache/gatehouse-fuzz-target}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# cargo fuzz builds with debug assertions and overflow checks by default
# (release profile plus -Cdebug-assertions; `-O` would turn them off).
BUILD_FLAGS=(--sanitizer "$SANITIZER")

echo "smoke.sh: building the fuzz targets (sanitizer $SANITIZER) into $CARGO_TARGET_DIR" >&2
cargo fuzz build "${BUILD_FLAGS[@]}"

LOG_DIR="$(mktemp -d)"
trap 'rm -rf "$LOG_DIR"' EXIT
status=0
summary=()
for target in "${TARGETS[@]}"; do
    corpus="fuzz/corpus/$target"
    seeds="fuzz/seeds/$target"
    mkdir -p "$corpus" "$seeds"
    log="$LOG_DIR/$target.log"
    echo "smoke.sh: fuzzing $target for ${SECONDS_PER_TARGET}s" >&2
    # The first directory receives new inputs; the seeds are only read.
    if cargo fuzz run "${BUILD_FLAGS[@]}" "$target" "$corpus" "$seeds" -- \
        -max_total_time="$SECONDS_PER_TARGET" \
        -dict=fuzz/dict/webhooks.dict \
        -timeout=25 \
        -print_final_stats=1 >"$log" 2>&1; then
        result="ok"
    else
        result="CRASH"
        status=1
        echo "---- $target: last lines of the log ----" >&2
        grep -a -E "panicked|ERROR|SUMMARY|Test unit written|Base64:|thread '" "$log" >&2 || true
        tail -n 30 "$log" >&2
    fi
    runs="$(grep -a -Eo '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -n 1 || true)"
    if [ -z "$runs" ]; then
        # No final stats after a crash: the last status line's count.
        runs="$(grep -a -Eo '^#[0-9]+' "$log" | tr -d '#' | tail -n 1 || true)"
    fi
    summary+=("$(printf '%-14s %-6s %10s execs' "$target" "$result" "${runs:-?}")")
    if grep -a -q "gatehouse-fuzz: NOT BUILT" "$log"; then
        grep -a -h "gatehouse-fuzz: NOT BUILT" "$log" | sort -u >&2
        if [ "${FUZZ_STRICT:-0}" = 1 ]; then
            status=1
        fi
    fi
    grep -a -h "gatehouse-fuzz: NOTE" "$log" | sort -u >&2 || true
done

echo
echo "smoke.sh: ${SECONDS_PER_TARGET}s per target, sanitizer $SANITIZER"
printf '  %s\n' "${summary[@]}"
if [ "$status" -ne 0 ]; then
    echo "smoke.sh: FAILED (crash inputs are in fuzz/artifacts/<target>/)" >&2
fi
exit "$status"
