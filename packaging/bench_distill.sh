#!/usr/bin/env bash
# NeUQI's lightweight distillation on the bundled demo model (issue 17): GPTQ, NeUQI and NeUQI +
# distillation at W2 g64, W3 g128 and W2 per channel (calibration: 128 windows of 256 tokens of
# calib.txt, seed 0; evaluation: eval.txt, ctx 128, every token scored), each row with perplexity,
# mean KL against the F32 model, the distillation's KL on the calibration windows before -> after,
# wall time and peak RSS (GNU time); then one distillation step against one F32 forward pass over
# the same tokens (bench --distill).
#   [QB_MODEL=DIR] packaging/bench_distill.sh [BUILD_DIR] [DISTILL_STEPS] [DISTILL_LR] [DISTILL_BATCH]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLI="${1:-$ROOT/build}/app/quantbench-cli"
STEPS="${2:-256}"
LR="${3:-1e-3}"
BATCH="${4:-2}"
DEMO="${QB_MODEL:-$ROOT/resources/demo}" # another model directory with calib.txt and eval.txt: QB_MODEL=DIR
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
row() {
    python3 - "$TMP/out.json" "$TMP/time.txt" <<'EOF'
import json, re, sys
o = json.load(open(sys.argv[1]))
rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(sys.argv[2]).read())
k = o["kl"]
s = f"ppl {o['perplexity']:8.3f}  KL {k['mean']:.4f}  top-1 {100 * k['top1_agreement']:.1f} %"
d = o.get("distill")
if d:
    s += f"  distill KL {d['loss_before']:.4f} -> {d['loss_after']:.4f} ({d['steps']} x {d['batch']}, {d['seconds']:.1f} s)"
s += f"  total {o['seconds']:.1f} s  peak {int(rss.group(1)) / 1024:.0f} MiB"
print(s)
EOF
}
echo "F32: ppl $("$CLI" eval "$DEMO" --text "$DEMO/eval.txt" --ctx 128 --json 2>/dev/null |
    python3 -c "import json,sys; print(round(json.load(sys.stdin)['perplexity'], 3))")"
for setting in "2 64" "3 128" "2 -1"; do
    read -r bits group <<<"$setting"
    for variant in gptq neuqi neuqi+distill; do
        method="${variant%%+*}"
        extra=()
        [[ "$variant" == *distill ]] && extra=(--distill --distill-steps "$STEPS" --distill-lr "$LR" --distill-batch "$BATCH")
        /usr/bin/time -v -o "$TMP/time.txt" "$CLI" quantize "$DEMO" --calib "$DEMO/calib.txt" --nsamples 128 \
            --seqlen 256 --method "$method" --bits "$bits" --group "$group" --eval "$DEMO/eval.txt" --ctx 128 \
            "${extra[@]}" --json >"$TMP/out.json" 2>/dev/null
        printf "W%s g%-4s %-14s %s\n" "$bits" "$group" "$variant" "$(row)"
    done
done
"$CLI" bench "$DEMO" --distill --ctx 256 --batch 4 --repeat 10
