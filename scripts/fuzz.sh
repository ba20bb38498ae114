#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) with libFuzzer, one after the
# other, for SECONDS each, on the machine's stable Rust toolchain, and
# prints each target's executions and executions per second.
#
#   scripts/fuzz.sh [--time SECONDS] [--jobs N] [TARGET ...]    (default: 600 s each, 1 job)
#
# cargo-fuzz (installed here if missing) passes nightly-only flags
# (-Zsanitizer=address, coverage options); RUSTC_BOOTSTRAP=1 lets the stable
# compiler take them, so no nightly toolchain is needed.
#
# Corpora grow in fuzz/corpus/<target>/ (ignored by git), starting from the
# committed fuzz/seeds/<target>/. A crash is copied to
# fuzz/regressions/<target>/, where `cargo test -p ferroflow-fuzzing` replays
# it with every later test run; the script prints the command that
# reproduces it and exits 1 after the remaining targets ran.
set -euo pipefail
cd "$(dirname "$0")/.."

time=600
jobs=1
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --time) time="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
export RUSTC_BOOTSTRAP=1
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

# -a: debug assertions (overflow checks) on, as in the test suite.
cargo fuzz build --fuzz-dir fuzz -a
parallel=()
if [ "$jobs" -gt 1 ]; then
    # libFuzzer's own parallel mode: N processes sharing the corpus (their logs: fuzz-<n>.log).
    parallel=(-jobs="$jobs" -workers="$jobs")
fi

failed=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log="fuzz-$t.log"
    echo "== $t: ${time}s (log: $log)"
    status=0
    # -rss_limit_mb: the image target may allocate a 4-megapixel image per
    # input; anything beyond 2 GiB is a bug (a bomb got past the pixel limit).
    cargo fuzz run --fuzz-dir fuzz -a "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$time" -print_final_stats=1 -rss_limit_mb=2048 "${parallel[@]}" \
        -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || status=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s+=$2} END {print s+0}')
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | awk '{s+=$2} END {print s+0}')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    if [ "$status" -ne 0 ]; then
        failed=1
        mkdir -p "fuzz/regressions/$t"
        for a in fuzz/artifacts/"$t"/*; do
            [ -f "$a" ] || continue
            cp "$a" "fuzz/regressions/$t/"
            echo "   crash saved as fuzz/regressions/$t/$(basename "$a")"
            echo "   reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz -a $t fuzz/regressions/$t/$(basename "$a")"
        done
        grep -m1 -E 'panicked|ERROR: AddressSanitizer|ERROR: libFuzzer' "$log" | sed 's/^/   /' || true
        summary+=("$t: FAILED after $execs executions (see $log)")
    else
        summary+=("$t: ${time}s, $execs executions, $rate exec/s, coverage ${cov:-?}, no crash")
    fi
done

echo "== summary ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores)"
printf '%s\n' "${summary[@]}"
exit "$failed"
