#!/usr/bin/env bash
# Weight-and-activation quality table (issue 14 item 6): perplexity of a model and its
# planted-outlier copy (packaging/make_outlier_model.py, same function) at W8A8, W6A6, W4A4
# (KV at the activation bits) with no transform, SmoothQuant (alpha 0.6) and QuaRot-style
# Hadamard rotation, weights by RTN (per channel) and GPTQ (per channel).
# Usage: packaging/bench_wa.sh MODEL_DIR [OUT_DIR]   (needs build/app/quantbench-cli)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model=${1:?model directory}
out=${2:-$(mktemp -d)}
cli=build/app/quantbench-cli
outlier="$out/$(basename "$model")-outlier"
[ -d "$outlier" ] || /usr/bin/python3 packaging/make_outlier_model.py "$model" "$outlier" >/dev/null
calib=resources/demo/calib.txt
evaltext=resources/demo/eval.txt
[ -f "$model/calib.txt" ] && calib=$model/calib.txt
[ -f "$model/eval.txt" ] && evaltext=$model/eval.txt
ppl() { "$cli" quantize "$1" --calib "$calib" --nsamples 32 --seqlen 128 --eval "$evaltext" --ctx 128 --no-kl \
    --json "${@:2}" 2>/dev/null | /usr/bin/python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["perplexity"])'; }
for m in "$model" "$outlier"; do
    fp=$("$cli" eval "$m" --text "$evaltext" --ctx 128 --json | /usr/bin/python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["perplexity"])')
    echo "## $(basename "$m")  (FP perplexity $fp, ctx 128)"
    echo "| setting | weights | none | smooth 0.6 | Hadamard | smooth + Hadamard |"
    echo "|---|---|---|---|---|---|"
    for b in 8 6 4; do
        for method in rtn gptq; do
            row="| W${b}A${b}KV${b} | $method |"
            for t in "" "--smooth 0.6" "--rotate hadamard" "--smooth 0.6 --rotate hadamard"; do
                # shellcheck disable=SC2086
                row="$row $(ppl "$m" --method $method --bits $b --group -1 --abits $b --kvbits $b $t) |"
            done
            echo "$row"
        done
    done
    echo
done
