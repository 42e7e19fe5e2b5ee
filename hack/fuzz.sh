#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes (fuzz/fuzz_targets/*.rs) for a
# bounded time each and fails if any target crashes, hangs or leaks.
#
#   FUZZ_SECONDS=60        seconds per target (libFuzzer -max_total_time)
#   FUZZ_TARGETS="a b"     only these targets (default: all)
#   FUZZ_SANITIZER=address address | none (none if the ASan runtime is missing)
#   FUZZ_UPDATE_CORPUS=1   merge the new finds into fuzz/corpus/<target>,
#                          keeping the seeds plus at most FUZZ_CORPUS_MAX (50)
#                          minimized files
#
# The committed corpus is read, never written, unless FUZZ_UPDATE_CORPUS=1:
# new inputs of a run go to a scratch directory. Crash inputs are kept in
# fuzz/artifacts/<target>/ (gitignored); reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}
FUZZ_CORPUS_MAX=${FUZZ_CORPUS_MAX:-50}
# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov-module);
# the stable toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
fuzz=(cargo fuzz)  # from the repo root: uses ./fuzz

echo "== building fuzz targets (sanitizer: $FUZZ_SANITIZER)"
"${fuzz[@]}" build -s "$FUZZ_SANITIZER"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
summary=()
for t in $targets; do
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus" "$scratch/$t"
    log=$scratch/$t.log
    echo "== fuzzing $t for ${FUZZ_SECONDS}s"
    rc=0
    # The first corpus directory receives new inputs: the scratch one.
    "${fuzz[@]}" run -s "$FUZZ_SANITIZER" "$t" "$scratch/$t" "$corpus" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=25 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
    # libFuzzer's last status line, e.g. "#123456 DONE cov: 812 ft: 2301 corp: 97/9Kb ... exec/s: 4115"
    grep -E '^#[0-9]+' "$log" | tail -n 1 || true
    if [ "$rc" -ne 0 ]; then
        echo "!! $t failed (exit $rc); libFuzzer's report:"
        grep -E -A 40 'ERROR: libFuzzer|panicked at|==ERROR|SUMMARY|Test unit written' "$log" | head -n 80 || tail -n 60 "$log"
        failed+=("$t")
        summary+=("$t: FAILED after ${execs:-?} execs")
        continue
    fi
    summary+=("$t: ${execs:-?} execs, ${speed:-?} exec/s, ${cov:-cov: ?}")
    if [ "${FUZZ_UPDATE_CORPUS:-0}" = 1 ]; then
        merged=$scratch/$t.merged
        mkdir -p "$merged"
        "${fuzz[@]}" run -s "$FUZZ_SANITIZER" "$t" "$merged" "$corpus" "$scratch/$t" -- \
            -merge=1 >>"$log" 2>&1
        # libFuzzer names files by the sha1 of their content; skip the seeds.
        seeds=$(find "$corpus" -type f -name 'seed-*' -exec sha1sum {} + | cut -d' ' -f1)
        find "$corpus" -type f ! -name 'seed-*' -delete
        find "$merged" -type f -printf '%s %p\n' | sort -n |
            while read -r _ f; do
                name=$(basename "$f")
                grep -qx "$name" <<<"$seeds" || echo "$f"
            done | head -n "$FUZZ_CORPUS_MAX" | xargs -r cp -t "$corpus"
        # Seeds that the merge found redundant stay: they document the format.
        echo "   corpus of $t: $(find "$corpus" -type f | wc -l) files"
    fi
done

echo "== fuzz summary (${FUZZ_SECONDS}s per target)"
printf '   %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "== crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
