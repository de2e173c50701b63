#!/usr/bin/env bash
# Prefill throughput of Quantbench's forward pass against llama.cpp (node-llama-cpp's prebuilt CPU
# binaries) on the same GGUF files, context and thread counts, plus Quantbench's peak memory.
# Each GGUF type in TYPES is written once from MODEL by `quantbench-cli convert`; both engines then
# read that same file (Quantbench keeps its weights in the stored type and decodes per tile).
# Run after `bash packaging/test.sh` (which builds and installs the npm references).
#   packaging/bench.sh [MODEL_DIR] [CTX] [WINDOWS] [TYPES]     TYPES: comma list, default f32
#   e.g. packaging/bench.sh /tmp/tl11 256 4 bf16,q8_0,q4_0
# Q4_0/Q8_0 also run with --kernels int8 (engine qb-int8): 8-bit activations and integer dot
# products, the arithmetic llama.cpp uses for those types.
# llama_bench.mjs asks llama.cpp for the last position's logits only, while Quantbench computes
# the logits of every position (a perplexity pass): the comparison favours llama.cpp.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${QB_BUILD_DIR:-$ROOT/build}"
MODEL="${1:-$ROOT/resources/demo}"
CTX="${2:-256}"
WINDOWS="${3:-16}"
TYPES="${4:-f32}"
CLI="$BUILD_DIR/app/quantbench-cli"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
tps() { sed 's/.*"tokens_per_second":\([0-9.]*\).*/\1/'; }
printf "%-6s %-10s %-8s %14s %8s\n" type engine threads tokens/s ratio
for type in ${TYPES//,/ }; do
    "$CLI" convert "$MODEL" --out "$TMP/model-$type.gguf" --gguf-type "$type" --json >/dev/null
    for t in 1 $(nproc); do
        q=$("$CLI" bench "$TMP/model-$type.gguf" --ctx "$CTX" --threads "$t" --windows "$WINDOWS" --json)
        l=$(QB_NODE_MODULES="$ROOT/.npm-test/node_modules" node "$ROOT/tests/export/llama_bench.mjs" \
            --model "$TMP/model-$type.gguf" --ctx "$CTX" --windows "$WINDOWS" --threads "$t")
        qt=$(echo "$q" | tps)
        lt=$(echo "$l" | tps)
        printf "%-6s %-10s %-8s %14.0f %8.2f   %s\n" "$type" quantbench "$t" "$qt" \
            "$(awk -v a="$qt" -v b="$lt" 'BEGIN { print a / b }')" "$q"
        printf "%-6s %-10s %-8s %14.0f\n" "$type" llama.cpp "$t" "$lt"
        if [ "$type" = q4_0 ] || [ "$type" = q8_0 ]; then
            # --kernels int8: llama.cpp's arithmetic (8-bit activations, integer dot products).
            q=$("$CLI" bench "$TMP/model-$type.gguf" --ctx "$CTX" --threads "$t" --windows "$WINDOWS" --kernels int8 \
                --json | head -1)
            qt=$(echo "$q" | tps)
            printf "%-6s %-10s %-8s %14.0f %8.2f   %s\n" "$type" qb-int8 "$t" "$qt" \
                "$(awk -v a="$qt" -v b="$lt" 'BEGIN { print a / b }')" "$q"
        fi
    done
done
