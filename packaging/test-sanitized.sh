#!/usr/bin/env bash
# The second half of CI: a portable (-DQB_NATIVE=OFF) build with AddressSanitizer and
# UndefinedBehaviorSanitizer in ./build-asan, running the fuzz replays (seed corpora and the
# reproducers of every crash found so far) and the core test executables. Portable code paths and
# memory errors are checked on every CI run; the native build of packaging/test.sh runs the rest.
#
#   packaging/test-sanitized.sh [--all]     --all: every test, GUI and the slow ones included
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${QB_ASAN_BUILD_DIR:-$ROOT/build-asan}"

LAUNCHER=()
command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    echo "==> configuring $BUILD_DIR (portable, ASan + UBSan)"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DQB_SANITIZE=ON -DQB_NATIVE=OFF \
        "${LAUNCHER[@]}"
fi

# Any report fails the test that triggered it; leaks are reported too.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

if [[ "${1:-}" == "--all" ]]; then
    echo "==> building everything (sanitized)"
    cmake --build "$BUILD_DIR" -j"$(nproc)"
    echo "==> running the whole suite under sanitizers"
    exec ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$(nproc)" --timeout 3000
fi

# Core tests only: the GUI tests and the end-to-end runs (label native-only: whole-model
# evaluations, exports through llama.cpp; qb_add_test's NATIVE_ONLY) stay in the native run,
# which keeps CI within its time budget on two cores.
CORE='^(base|io|quant|model|eval|pipeline|export|arch|fuzz)$'
echo "==> building the sanitized core tests (target qb_core_tests)"
cmake --build "$BUILD_DIR" -j"$(nproc)" --target qb_core_tests
echo "==> running the core tests and fuzz replays under sanitizers"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$(nproc)" \
    -L "$CORE" -LE native-only --timeout 1200
