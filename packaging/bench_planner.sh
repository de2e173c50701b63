#!/usr/bin/env bash
# The planner's proof (issue 16 item 7): at the same total size, the mixed plan allocated from the
# sensitivity atlas against the uniform setting of that size, both quantized with the same
# calibration and scored on the same text (perplexity, and KL divergence from the original).
# Side by side in one run; the ratio column is mixed / uniform.
#   packaging/bench_planner.sh [MODEL] [CALIB] [EVAL] [UNIFORM...]
# UNIFORM items are method:bits:group (default gptq:2:64 gptq:3:128 gptq:4:128, about 2.5, 3.25 and
# 4.25 bits/weight on the demo model). The atlas measures every tensor's true KL (--measure) at the
# smallest candidate and at each uniform setting compared (so the damage near every budget reads in
# nats of KL), and "mixed (calibrated)" is compared with "mixed (proxy only)". The true KL is
# measured on MEASURE (default: the calibration text), never on the text that is scored.
# SEEDS (default "0") repeats every row for each calibration seed and adds the mean over them.
# CTX (default 128) is the evaluation window for the KL measurements and the scoring: both demo
# models were trained on 128-token windows, so a longer window scores mostly positions past the
# trained length (the demo's F32 perplexity is 41.46 at 128, 92.88 at 512).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${QB_BUILD_DIR:-$ROOT/build}"
CLI="$BUILD_DIR/app/quantbench-cli"
MODEL="${1:-$ROOT/resources/demo}"
CALIB="${2:-$ROOT/resources/demo/calib.txt}"
EVAL="${3:-$ROOT/resources/demo/eval.txt}"
MEASURE="${MEASURE:-$CALIB}"
shift $(( $# < 3 ? $# : 3 )) || true
UNIFORM=("$@")
[ ${#UNIFORM[@]} -gt 0 ] || UNIFORM=(gptq:2:64 gptq:3:128 gptq:4:128)
NS="${QB_BENCH_NSAMPLES:-64}"
SEQ="${QB_BENCH_SEQLEN:-256}"
CTX="${QB_BENCH_CTX:-128}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
read -r -a seeds <<<"${SEEDS:-0}"
TENSORS=$("$CLI" info "$MODEL" --json | /usr/bin/python3 -c 'import json,sys; c=json.load(sys.stdin); print(7*int(c.get("num_hidden_layers", c.get("config",{}).get("num_hidden_layers", 0))))')
field() { /usr/bin/python3 -c "import json,sys; d=json.load(open('$1')); print($2)"; }
printf "%-34s %8s %10s %12s %12s\n" setting bpw MB perplexity "KL (nats)"
row() { # label json
    printf "%-34s %8.4f %10.4f %12.4f %12.6f\n" "$1" "$(field "$2" "d['bits_per_weight']")" \
        "$(field "$2" "d['size_bytes']/1e6")" "$(field "$2" "d['perplexity']")" "$(field "$2" "d['kl']['mean']")"
}
ratio() { # mixed.json uniform.json
    printf "%-34s %8s %10s %12.4f %12.4f\n" "    ratio mixed/uniform" "" "" \
        "$(/usr/bin/python3 -c "import json; a=json.load(open('$1')); b=json.load(open('$2')); print(a['perplexity']/b['perplexity'])")" \
        "$(/usr/bin/python3 -c "import json; a=json.load(open('$1')); b=json.load(open('$2')); print(a['kl']['mean']/b['kl']['mean'])")"
}
mean() { # label json...: the mean perplexity and KL of the runs
    /usr/bin/python3 -c 'import json,sys
d=[json.load(open(f)) for f in sys.argv[2:]]
n=len(d)
print("%-34s %8s %10s %12.4f %12.6f" % (sys.argv[1], "", "", sum(x["perplexity"] for x in d)/n, sum(x["kl"]["mean"] for x in d)/n))' "$@"
}
# SEEDS="0 1 2": every row again for each calibration seed (--seed: which windows are drawn), then
# the mean over the seeds; a single draw can tip a close comparison either way.
for u in "${UNIFORM[@]}"; do
    IFS=: read -r method bits group <<<"$u"
    for sd in "${seeds[@]}"; do
        QCAL=(--calib "$CALIB" --nsamples "$NS" --seqlen "$SEQ" --seed "$sd")
        CAL=("${QCAL[@]}" --cache "$TMP/cache")
        tag=""
        [ ${#seeds[@]} -gt 1 ] && tag=" (seed $sd)"
        "$CLI" quantize "$MODEL" "${QCAL[@]}" --method "$method" --bits "$bits" --group "$group" --eval "$EVAL" \
            --ctx "$CTX" --json >"$TMP/u-$sd.json" 2>/dev/null
        bpw=$(field "$TMP/u-$sd.json" "'%.6f' % d['bits_per_weight']")
        # The smallest candidate (kept in the cache after the first row) and this uniform setting.
        "$CLI" sensitivity "$MODEL" "${CAL[@]}" --eval "$MEASURE" --ctx "$CTX" --measure "$TENSORS" --json \
            >/dev/null 2>&1
        "$CLI" sensitivity "$MODEL" "${CAL[@]}" --eval "$MEASURE" --ctx "$CTX" --measure "$TENSORS" \
            --measure-candidate "$u" --json >/dev/null 2>&1
        row "uniform $u$tag" "$TMP/u-$sd.json"
        for mode in calibrated proxy-only; do
            extra=()
            [ "$mode" = proxy-only ] && extra=(--proxy-only)
            "$CLI" plan "$MODEL" "${CAL[@]}" --budget "${bpw}bpw" --out "$TMP/plan.json" "${extra[@]}" --json \
                >/dev/null 2>&1
            "$CLI" quantize "$MODEL" "${QCAL[@]}" --plan "$TMP/plan.json" --eval "$EVAL" --ctx "$CTX" --json \
                >"$TMP/m-$mode-$sd.json" 2>/dev/null
            row "  mixed ($mode)" "$TMP/m-$mode-$sd.json"
            ratio "$TMP/m-$mode-$sd.json" "$TMP/u-$sd.json"
        done
    done
    if [ ${#seeds[@]} -gt 1 ]; then
        mean "mean: uniform $u" $(for sd in "${seeds[@]}"; do echo "$TMP/u-$sd.json"; done)
        mean "mean:   mixed (calibrated)" $(for sd in "${seeds[@]}"; do echo "$TMP/m-calibrated-$sd.json"; done)
        mean "mean:   mixed (proxy-only)" $(for sd in "${seeds[@]}"; do echo "$TMP/m-proxy-only-$sd.json"; done)
    fi
done
