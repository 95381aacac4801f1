#!/usr/bin/env bash
# Set up (scripts/setup.sh), then start napari with a synthetic sample subject
# open and the HyperFusion panel docked. Extra arguments go to the launcher
# (see `.venv/bin/napari-hyperfusion --help`), e.g. --model risk_medfusion.
# On a machine with no display, napari runs under a virtual X server (Xvfb,
# installed by setup): nothing is shown, so pass --screenshot FILE.png to see it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  echo "demo: no display found; running napari under a virtual X server (xvfb-run)" >&2
  case " $* " in
    *" --screenshot "*) ;;
    *) echo "demo: nothing will be visible; add --screenshot demo.png to save the window as a picture" >&2 ;;
  esac
  exec xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/napari-hyperfusion "$@"
fi
exec .venv/bin/napari-hyperfusion "$@"
