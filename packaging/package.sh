#!/usr/bin/env bash
# Builds the Debian package (and a .tar.gz) from a portable tree (-DQB_NATIVE=OFF, no tests) in
# ./build-package, so that the package runs on any x86-64 CPU. Output: build-package/*.deb
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${QB_PACKAGE_BUILD_DIR:-$ROOT/build-package}"
"$ROOT/packaging/bootstrap.sh" --deps-only
LAUNCHER=()
command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DQB_NATIVE=OFF -DQB_BUILD_TESTS=OFF "${LAUNCHER[@]}"
cmake --build "$BUILD_DIR" -j"$(nproc)"
(cd "$BUILD_DIR" && cpack -G "DEB;TGZ")
ls -l "$BUILD_DIR"/*.deb
