#!/usr/bin/env bash
# Set up (scripts/setup.sh) and start napari with napari-hyperfusion installed.
# Needs a display; on a headless machine run it under `xvfb-run -a`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  echo "demo: no display found; run 'xvfb-run -a bash scripts/demo.sh' on a headless machine" >&2
  exit 2
fi
exec .venv/bin/napari "$@"
