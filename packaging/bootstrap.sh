#!/usr/bin/env bash
# Quantbench set-up shared by start.sh and test.sh: installs the Debian 12 packages that are
# missing (and only those), then configures and builds into ./build (reused on the next run;
# ccache is used when present). Safe to run again: a second run with nothing changed is fast.
#
#   packaging/bootstrap.sh [--tests]      --tests also installs the npm reference tools
#   packaging/bootstrap.sh --deps-only    only the Debian packages (for packaging/package.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${QB_BUILD_DIR:-$ROOT/build}"
WITH_TESTS=0
DEPS_ONLY=0
[[ "${1:-}" == "--tests" ]] && WITH_TESTS=1
[[ "${1:-}" == "--deps-only" ]] && DEPS_ONLY=1

# Build and run-time packages (see ../shared/design/BUILD.md for why each is listed).
PKGS=(cmake g++ make qt6-base-dev qt6-charts-dev libqt6opengl6-dev libquazip1-qt6-dev
      libeigen3-dev libpcre2-dev qt6-qpa-plugins fonts-dejavu-core xauth xvfb ccache)
if [[ $WITH_TESTS == 1 ]] && ! command -v node >/dev/null; then
    PKGS+=(nodejs npm)
fi
if [[ $WITH_TESTS == 1 ]]; then
    PKGS+=(clang-format-19) # packaging/check-format.sh: the tree must be formatted
    PKGS+=(python3-venv)    # the Python references (tests/python/requirements.txt) live in a venv
fi

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    echo "==> installing missing Debian packages: ${missing[*]}"
    SUDO=""
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null || { echo "error: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
        SUDO="sudo"
    fi
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q \
        --no-install-recommends "${missing[@]}"
else
    echo "==> Debian packages: all present"
fi

[[ $DEPS_ONLY == 1 ]] && exit 0

LAUNCHER=()
command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    echo "==> configuring $BUILD_DIR"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "${LAUNCHER[@]}" ${QB_CMAKE_ARGS:-}
fi
echo "==> building"
cmake --build "$BUILD_DIR" -j"$(nproc)"

if [[ $WITH_TESTS == 1 ]]; then
    # Reference implementations used by the tests (Hugging Face tokenizers, llama.cpp bindings),
    # pinned in tests/node/package.json and installed once into ./.npm-test.
    NPM_DIR="$ROOT/.npm-test"
    if ! cmp -s "$ROOT/tests/node/package.json" "$NPM_DIR/package.json" 2>/dev/null \
        || [[ ! -d "$NPM_DIR/node_modules" ]]; then
        echo "==> installing npm test references into $NPM_DIR"
        mkdir -p "$NPM_DIR"
        cp "$ROOT/tests/node/package.json" "$NPM_DIR/package.json"
        (cd "$NPM_DIR" && npm install --no-audit --no-fund --loglevel=error --omit=optional)
    else
        echo "==> npm test references: present"
    fi
    # The Rust-backed Hugging Face tokenizers (PyPI), pinned in tests/python/requirements.txt and
    # installed once into a virtual environment under ./.npm-test/venv.
    VENV="$NPM_DIR/venv"
    if ! cmp -s "$ROOT/tests/python/requirements.txt" "$VENV/requirements.txt" 2>/dev/null; then
        echo "==> installing Python test references into $VENV"
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/tests/python/requirements.txt"
        cp "$ROOT/tests/python/requirements.txt" "$VENV/requirements.txt"
    else
        echo "==> Python test references: present"
    fi
fi
