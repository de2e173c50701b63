#!/usr/bin/env bash
# RUQuant quality table (issue 15 item 7): perplexity at W4A4KV4 and W6A6KV6 (queries quantized
# too, as RUQuant does) of a model and its planted-outlier copy (packaging/make_outlier_model.py)
# for RTN without transform, SmoothQuant (alpha 0.6), QuaRot-style Hadamard (RTN after the rotation,
# no smoothing), SmoothQuant + Hadamard, RUQuant
# and RUQuant + fine-tuning of the global Householder (W4A4 only, as the paper). Every row uses
# RUQuant's quantizers: RTN weights per channel with range ratio 0.8 at 4 bits (1.0 at 6), per-token
# activations with clip 0.9 at 4 bits (1.0 at 6).
# The rotating columns (Hadamard, RUQuant) depend on the transform seed: SEEDS="0 1 2 3 4" gives
# each of them as the mean over those --rotate-seed values with the range (default: seed 0 only).
# Usage: [SEEDS="0 1 2"] packaging/bench_ruquant.sh MODEL_DIR [OUT_DIR] [EXTRA quantize flags, e.g. --ruquant-block 32]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model=${1:?model directory}
out=${2:-$(mktemp -d)}
extra=("${@:3}")
cli="${QB_BUILD_DIR:-build}/app/quantbench-cli"
outlier="$out/$(basename "$model")-outlier"
[ -d "$outlier" ] || /usr/bin/python3 packaging/make_outlier_model.py "$model" "$outlier" >/dev/null
calib=resources/demo/calib.txt
evaltext=resources/demo/eval.txt
[ -f "$model/calib.txt" ] && calib=$model/calib.txt
[ -f "$model/eval.txt" ] && evaltext=$model/eval.txt
read -r -a seeds <<<"${SEEDS:-0}"
ppl1() {
    "$cli" quantize "$1" --calib "$calib" --nsamples 32 --seqlen 128 --eval "$evaltext" --ctx 128 --no-kl \
        --json "${@:2}" 2>/dev/null | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["perplexity"])'
}
ppl() { # one run, seconds
    local t0 t1 p
    t0=$(date +%s.%N)
    p=$(ppl1 "$@")
    t1=$(date +%s.%N)
    printf '%.2f (%.0f s)' "$p" "$(echo "$t1 - $t0" | bc)"
}
pplSeeds() { # the mean over SEEDS (range), seconds per run
    [ ${#seeds[@]} -gt 1 ] || { ppl "$@" --rotate-seed "${seeds[0]}"; return; }
    local t0 t1 all=()
    t0=$(date +%s.%N)
    for s in "${seeds[@]}"; do all+=("$(ppl1 "$@" --rotate-seed "$s")"); done
    t1=$(date +%s.%N)
    /usr/bin/python3 -c 'import sys; v=[float(x) for x in sys.argv[2:]]; print("%.2f (%.2f-%.2f; %.0f s)" % (sum(v)/len(v), min(v), max(v), float(sys.argv[1])/len(v)), end="")' \
        "$(echo "$t1 - $t0" | bc)" "${all[@]}"
}
for m in "$model" "$outlier"; do
    fp=$("$cli" eval "$m" --text "$evaltext" --ctx 128 --json | /usr/bin/python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["perplexity"])')
    echo "## $(basename "$m")  (FP perplexity $fp, ctx 128; calibration 32 x 128; seeds ${seeds[*]})"
    echo "| setting | RTN | SmoothQuant | Hadamard | Smooth + Hadamard | RUQuant | RUQuant + fine-tune |"
    echo "|---|---|---|---|---|---|---|"
    for b in 4 6; do
        if [ "$b" = 4 ]; then wc=0.8 ac=0.9; else wc=1.0 ac=1.0; fi
        base=(--method rtn --bits "$b" --group -1 --wclip "$wc" --abits "$b" --aclip "$ac" --kvbits "$b" --qbits "$b")
        row="| W${b}A${b}KV${b} | $(ppl "$m" "${base[@]}") | $(ppl "$m" "${base[@]}" --smooth 0.6)"
        row="$row | $(pplSeeds "$m" "${base[@]}" --rotate hadamard)"
        row="$row | $(pplSeeds "$m" "${base[@]}" --smooth 0.6 --rotate hadamard)"
        row="$row | $(pplSeeds "$m" --method ruquant --bits "$b" "${extra[@]}")"
        if [ "$b" = 4 ]; then row="$row | $(pplSeeds "$m" --method ruquant --bits "$b" --ruquant-finetune "${extra[@]}") |"
        else row="$row | - |"; fi
        echo "$row"
    done
    echo
done
