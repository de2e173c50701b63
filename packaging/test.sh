#!/usr/bin/env bash
# Installs what is missing (Debian packages and the npm reference tools), builds, and runs the
# whole test suite through CTest. .ci/run calls exactly this.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${QB_BUILD_DIR:-$ROOT/build}"
"$ROOT/packaging/bootstrap.sh" --tests
"$ROOT/packaging/check-format.sh"
echo "==> running the test suite"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$(nproc)" "$@"
