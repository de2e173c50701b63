#!/usr/bin/env bash
# Prefill throughput of Quantbench's F32 forward pass against llama.cpp (node-llama-cpp's
# prebuilt CPU binaries) on the same model, context and thread counts, plus peak memory.
# Run after `bash packaging/test.sh` (which builds and installs the npm references).
#   packaging/bench.sh [MODEL_DIR] [CTX] [WINDOWS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${QB_BUILD_DIR:-$ROOT/build}"
MODEL="${1:-$ROOT/resources/demo}"
CTX="${2:-256}"
WINDOWS="${3:-16}"
CLI="$BUILD_DIR/app/quantbench-cli"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$CLI" convert "$MODEL" --out "$TMP/model-f32.gguf" --gguf-type f32 --json >/dev/null
printf "%-10s %-8s %14s\n" engine threads tokens/s
for t in 1 $(nproc); do
    q=$("$CLI" bench "$MODEL" --ctx "$CTX" --threads "$t" --windows "$WINDOWS" --json)
    l=$(QB_NODE_MODULES="$ROOT/.npm-test/node_modules" node "$ROOT/tests/export/llama_bench.mjs" \
        --model "$TMP/model-f32.gguf" --ctx "$CTX" --windows "$WINDOWS" --threads "$t")
    printf "%-10s %-8s %14.0f   %s\n" quantbench "$t" "$(echo "$q" | sed 's/.*"tokens_per_second":\([0-9.]*\).*/\1/')" "$q"
    printf "%-10s %-8s %14.0f\n" llama.cpp "$t" "$(echo "$l" | sed 's/.*"tokens_per_second":\([0-9.]*\).*/\1/')"
done
