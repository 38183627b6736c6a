#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 60), one after
# the other, starting from the committed seeds in fuzz/corpus/<target>/.
#
#   bash fuzz/run.sh 30        # CI: 30 s per target
#   bash fuzz/run.sh 3600      # by hand, longer
#
# Stable Rust: cargo-fuzz passes -Z flags (sanitizer, coverage), which
# RUSTC_BOOTSTRAP=1 lets a stable compiler accept; no nightly is needed.
# Builds are optimised with debug assertions and overflow checks on (-O -a),
# under AddressSanitizer. New inputs go to fuzz/target/corpus/<target>/ (not
# committed); a crash is written to fuzz/artifacts/<target>/ and makes this
# script exit 1 after every target has run (reproduce it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run -O -a <target> <file>` in fuzz/).
# Each target's execution count and coverage are printed at the end.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || (( seconds < 1 )); then
    echo "usage: $0 SECONDS_PER_TARGET" >&2
    exit 2
fi
export RUSTC_BOOTSTRAP=1
# Exits on the first failure (each target runs as its own process); leak
# detection is off: the fixtures live for the process on purpose.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

echo "==> building fuzz targets (release, debug assertions, ASan)"
cargo fuzz build -O -a

failed=()
summary=()
for target in $(cargo fuzz list); do
    work="target/corpus/$target"
    log="target/fuzz-$target.log"
    mkdir -p "$work" "corpus/$target"
    echo "==> fuzzing $target for ${seconds}s"
    status=0
    # -timeout: one input taking over 10 s is a hang, reported as a crash.
    # -rss_limit_mb: memory growth past 2 GB is reported as a crash too.
    cargo fuzz run -O -a "$target" "$work" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    summary+=("$target: ${execs:-?} executions, ${cov:-cov: ?}, exit $status")
    if (( status != 0 )); then
        failed+=("$target")
        echo "!! $target failed (exit $status); last lines of $log:" >&2
        tail -40 "$log" >&2
    fi
done

echo "==> summary"
printf '    %s\n' "${summary[@]}"
if (( ${#failed[@]} > 0 )); then
    echo "fuzzing found a failure in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzzing passed"
