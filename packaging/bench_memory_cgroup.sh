#!/usr/bin/env bash
# A whole quantize run (calibration, GPTQ per layer, evaluation with KL against the original, GGUF
# export) inside a memory cgroup, as on a machine with that much RAM: the memory-mapped weights
# count as page cache and are reclaimed under pressure, anonymous memory cannot be. Samples the
# process's resident memory (all, anonymous), the cgroup's usage and the finished layers every 10 s.
#
#   packaging/bench_memory_cgroup.sh MODEL_DIR [LIMIT_GIB=16] [method options...]
#
# The method options default to GPTQ W4 g128 (--method gptq --bits 4 --group 128); e.g.
# `--method gptq --target gguf:Q4_K` exports llama.cpp blocks (a plain g128 grid exports as F32).
# EVAL_BYTES (default 4096: one batch of 4 windows of 256 tokens) cuts the evaluation text: every
# batch streams both whole models, which at 7B on 2 cores is minutes of compute per batch.
#
# e.g. python3 packaging/make_random_model.py /tmp/l7b --preset llama-7b --shards 3
#      packaging/bench_memory_cgroup.sh /tmp/l7b 16
# Needs root and a writable cgroup (v2: memory.max; v1: memory.limit_in_bytes). Writes
# $OUT/{samples.log,run.json,time.txt} (OUT defaults to /tmp/qb-memory-bench).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${1:?model directory}"
LIMIT_GIB="${2:-16}"
shift $(($# >= 2 ? 2 : 1))
OUT="${OUT:-/tmp/qb-memory-bench}"
CLI="${CLI:-$ROOT/build/app/quantbench-cli}"
EVAL_BYTES="${EVAL_BYTES:-4096}"
[ $# -gt 0 ] || set -- --method gptq --bits 4 --group 128
mkdir -p "$OUT"
rm -rf "$OUT/ckpt" "$OUT/model.gguf"
head -c "$EVAL_BYTES" "$ROOT/resources/demo/eval.txt" >"$OUT/eval.txt"

# The cgroup: a child of this shell's own (v2 unified, else v1 memory controller).
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    CG="/sys/fs/cgroup$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)/qb-bench-$$"
    mkdir "$CG"
    echo $((LIMIT_GIB << 30)) >"$CG/memory.max"
    USAGE="$CG/memory.current"
    PEAK="$CG/memory.peak"
else
    CG="/sys/fs/cgroup/memory$(awk -F: '$2 == "memory" {print $3}' /proc/self/cgroup)/qb-bench-$$"
    mkdir "$CG"
    echo $((LIMIT_GIB << 30)) >"$CG/memory.limit_in_bytes"
    USAGE="$CG/memory.usage_in_bytes"
    PEAK="$CG/memory.max_usage_in_bytes"
fi
trap 'rmdir "$CG" 2>/dev/null || true' EXIT

(
    echo $BASHPID >"$CG/cgroup.procs"
    exec /usr/bin/time -v -o "$OUT/time.txt" "$CLI" quantize "$MODEL" --calib "$ROOT/resources/demo/calib.txt" \
        --nsamples 16 --seqlen 256 --eval "$OUT/eval.txt" \
        --ctx 256 --threads "$(nproc)" --checkpoint-dir "$OUT/ckpt" --out "$OUT/model.gguf" --format gguf --json "$@"
) >"$OUT/run.json" &
RUN=$!
: >"$OUT/samples.log"
while kill -0 $RUN 2>/dev/null; do
    pid=$(pgrep -P $RUN | head -1 || true) # /usr/bin/time's child: quantbench-cli
    if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
        layers=$(ls "$OUT/ckpt" 2>/dev/null | grep -c '^layer-' || true)
        echo "$(date +%T) layers_done=$layers" \
            "rss_mib=$(($(awk '/VmRSS/{print $2}' /proc/$pid/status) / 1024))" \
            "anon_mib=$(($(awk '/RssAnon/{print $2}' /proc/$pid/status) / 1024))" \
            "cgroup_mib=$(($(cat "$USAGE") >> 20))" "cgroup_peak_mib=$(($(cat "$PEAK" 2>/dev/null || echo 0) >> 20))" \
            >>"$OUT/samples.log"
    fi
    sleep 10
done
wait $RUN && rc=0 || rc=$?
echo "exit $rc; peak resident $(awk -F': ' '/Maximum resident/{print $2}' "$OUT/time.txt") KiB," \
    "cgroup peak $(($(cat "$PEAK" 2>/dev/null || echo 0) >> 20)) MiB of ${LIMIT_GIB} GiB"
exit $rc
