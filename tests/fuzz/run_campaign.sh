#!/usr/bin/env bash
# Runs every libFuzzer harness of build-fuzz for SECONDS each, JOBS at a time, with working
# corpora in WORKDIR (seeded from corpus/), and prints one summary line per harness: runs, execs/s,
# coverage (cov/ft), and crashes/timeouts/OOMs found (artifacts in WORKDIR/artifacts/<harness>/).
#
#   tests/fuzz/run_campaign.sh [SECONDS=1800] [JOBS=2] [WORKDIR=/tmp/qb-fuzz]
# Exit status: 0 when no harness found anything.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECONDS_EACH="${1:-1800}"
JOBS="${2:-2}"
WORK="${3:-/tmp/qb-fuzz}"
BIN="${QB_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}/tests/fuzz"
HARNESSES=(safetensors gguf torch_bin tokenizer hf_config quant_plan qbproj cli_args)
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$ROOT/tests/fuzz/ubsan.supp"
export ASAN_OPTIONS="detect_leaks=1"
mkdir -p "$WORK"

run_one() {
    local h=$1 dir="$WORK/corpus/$1" art="$WORK/artifacts/$1/"
    mkdir -p "$dir" "$art"
    (cd "$WORK" && nice -n 10 "$BIN/fuzz_$h" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 -artifact_prefix="$art" \
        "$dir" "$ROOT/tests/fuzz/corpus/$h" >"$WORK/$h.log" 2>&1)
}

for h in "${HARNESSES[@]}"; do
    [[ -x "$BIN/fuzz_$h" ]] || { echo "missing $BIN/fuzz_$h (build it with -DQB_FUZZ=ON, README.md)" >&2; exit 2; }
done
running=0
for h in "${HARNESSES[@]}"; do
    run_one "$h" &
    ((++running >= JOBS)) && { wait -n; ((running--)); }
done
wait

found=0
printf '%-12s %12s %9s %7s %7s %s\n' harness runs exec/s cov ft findings
for h in "${HARNESSES[@]}"; do
    log="$WORK/$h.log"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    n=$(find "$WORK/artifacts/$h" -type f | wc -l)
    ((found += n))
    printf '%-12s %12s %9s %7s %7s %s\n' "$h" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" \
        "$([[ $n == 0 ]] && echo none || echo "$n in $WORK/artifacts/$h")"
done
exit $((found > 0))
