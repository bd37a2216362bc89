#!/usr/bin/env bash
# Regenerate docs/screenshot.png, the README's picture: the Xvfb screenshot test
# (tests/gui_screenshot.rs) runs the real app on a fresh home (embedded model, first bundled
# sample explained, default layout and theme) and keeps its screenshot in the target folder.
# Needs Xvfb and ImageMagick, as the test does.
set -euo pipefail
cd "$(dirname "$0")/.."
TRISCOPE_REQUIRE_XVFB=1 cargo test --release --test gui_screenshot
target=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
# 256 colours and no metadata: a README picture (about 250 KB), not a test artefact.
convert "$target/tmp/triscope-screenshot.png" -strip -colors 256 -define png:compression-level=9 \
  docs/screenshot.png
echo "wrote docs/screenshot.png ($(du -h docs/screenshot.png | cut -f1))"
