#!/usr/bin/env bash
# Re-measures the README's perplexity table on the bundled demo model: F32, then RTN / GPTQ /
# NeUQI at W4 g128, W3 g128 and W2 g64 (calibration: 128 windows of 256 tokens of calib.txt,
# seed 0; evaluation: eval.txt, ctx 128, every token scored) with perplexity, mean KL against
# the F32 model and the same-top-token rate. Prints one line per row.
#   packaging/demo_figures.sh [BUILD_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLI="${1:-$ROOT/build}/app/quantbench-cli"
DEMO="$ROOT/resources/demo"
field() { python3 -c "import json,sys; print(round(json.load(sys.stdin)['$1'], ${2:-4}))"; }
kl() { python3 -c "import json,sys; k=json.load(sys.stdin)['kl']; print(f\"KL {k['mean']:.4f}, top-1 {100*k['top1_agreement']:.1f} %\")"; }
echo "F32: $("$CLI" eval "$DEMO" --text "$DEMO/eval.txt" --ctx 128 --json 2>/dev/null | field perplexity)"
for setting in "4 128" "3 128" "2 64"; do
    read -r bits group <<<"$setting"
    line="W$bits g$group:"
    for method in rtn gptq neuqi; do
        json=$("$CLI" quantize "$DEMO" --calib "$DEMO/calib.txt" --nsamples 128 --seqlen 256 --method "$method" \
            --bits "$bits" --group "$group" --eval "$DEMO/eval.txt" --ctx 128 --json 2>/dev/null)
        line+=" $method $(field perplexity 2 <<<"$json") ($(field bits_per_weight 2 <<<"$json") bits, $(kl <<<"$json"))"
    done
    echo "$line"
done
