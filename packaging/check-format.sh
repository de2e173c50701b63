#!/usr/bin/env bash
# Checks that every C++ source git tracks is formatted with the root .clang-format (clang-format
# 19, pinned: other versions format differently). Lists the files that are not and exits 1.
#   packaging/check-format.sh          check
#   packaging/check-format.sh --fix    format them in place
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CF="${CLANG_FORMAT:-clang-format-19}"
command -v "$CF" >/dev/null || { echo "error: $CF not found (apt-get install clang-format-19)" >&2; exit 1; }
cd "$ROOT"
mapfile -t files < <(git ls-files '*.cpp' '*.h')
if [[ "${1:-}" == "--fix" ]]; then
    "$CF" -i "${files[@]}"
    exit 0
fi
bad=()
for f in "${files[@]}"; do
    if ! "$CF" --dry-run --Werror "$f" >/dev/null 2>&1; then bad+=("$f"); fi
done
if ((${#bad[@]})); then
    echo "error: ${#bad[@]} file(s) not formatted (run packaging/check-format.sh --fix):" >&2
    printf '  %s\n' "${bad[@]}" >&2
    exit 1
fi
echo "==> format: ${#files[@]} files formatted"
