#!/usr/bin/env bash
# Installs what is missing, builds, and starts the workbench on the bundled demo model.
# Without a display it says so and runs a headless demo through quantbench-cli instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${QB_BUILD_DIR:-$ROOT/build}"
"$ROOT/packaging/bootstrap.sh"

DEMO="$ROOT/resources/demo"
if [[ -n "${DISPLAY:-}" || -n "${WAYLAND_DISPLAY:-}" ]]; then
    echo "==> starting the workbench on $DEMO"
    if (($#)); then exec "$BUILD_DIR/app/quantbench" "$@"; fi
    exec "$BUILD_DIR/app/quantbench" "$DEMO"
fi

CLI="$BUILD_DIR/app/quantbench-cli"
echo "==> no display (DISPLAY and WAYLAND_DISPLAY are unset): running a headless demo instead"
echo "    (to see the window: run this from a desktop session, or: xvfb-run -a $0)"
run() { echo; echo "\$ ${*/#$ROOT\//}"; "$@"; }
run "$CLI" --version
if [[ -f "$DEMO/config.json" ]]; then
    run "$CLI" info "$DEMO"
    run "$CLI" eval "$DEMO" --text "$DEMO/eval.txt" --ctx 128
    run "$CLI" bench "$DEMO" --ctx 128
fi
QT_QPA_PLATFORM=offscreen "$BUILD_DIR/app/quantbench" "$DEMO" --grab "$BUILD_DIR/quantbench-window.png" 2>/dev/null
echo
echo "==> rendered the workbench window offscreen into $BUILD_DIR/quantbench-window.png"
