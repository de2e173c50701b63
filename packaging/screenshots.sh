#!/usr/bin/env bash
# Regenerates the README screenshots in resources/screenshots/ by running the GUI tests
# offscreen (they drive the real window and save QWidget::grab() images).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${QB_BUILD_DIR:-$ROOT/build}"
cmake --build "$BUILD_DIR" -j"$(nproc)" --target tst_workbench_jobs tst_quantize_panel tst_transform_lab_view tst_distill_panel tst_window_layout
mkdir -p "$ROOT/resources/screenshots"
QB_SCREENSHOT_DIR="$ROOT/resources/screenshots" ctest --test-dir "$BUILD_DIR" -R "tst_workbench_jobs|tst_quantize_panel|tst_transform_lab_view|tst_distill_panel|tst_window_layout" --output-on-failure
ls -l "$ROOT/resources/screenshots"
