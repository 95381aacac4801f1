#!/usr/bin/env bash
# Set up (scripts/setup.sh), then start napari with a synthetic sample subject
# open and the HyperFusion panel docked (napari-hyperfusion --help for options).
# Needs a display; on a headless machine run it under `xvfb-run -a`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  echo "demo: no display found; run 'xvfb-run -a bash scripts/demo.sh' on a headless machine" >&2
  exit 2
fi
exec .venv/bin/napari-hyperfusion "$@"
