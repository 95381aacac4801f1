#!/usr/bin/env bash
# Set up napari-hyperfusion on a fresh Debian/Ubuntu machine (Python 3.11):
#  - the system libraries napari's OpenGL canvas needs, and Xvfb for headless use;
#  - a virtual environment in .venv;
#  - torch 2.13.0 first, pinned: an unpinned torch can pull a multi-GB CUDA build;
#  - the package in editable mode with its Qt binding (PyQt6 via napari's extra),
#    the clinical-note encoder ([notes]), the test tools and ruff ([dev]).
# Safe to run again: it only installs what is missing, and skips pip entirely
# while pyproject.toml and this script are unchanged since the last success.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  xvfb xauth libgl1 libgl1-mesa-dri libglx-mesa0 libegl1 libglib2.0-0 libx11-xcb1
  libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
  libxcb-render-util0 libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 libxcb-shape0
  libxcb-cursor0 libdbus-1-3 libfontconfig1
)
if command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "setup: installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "setup: apt-get not found; install Xvfb and the Mesa OpenGL libraries by hand" >&2
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.setup-stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[qt,notes,prep,testing,dev]"
  echo "$want" > "$stamp"
fi
echo "setup: done ($(.venv/bin/python -c 'import torch, napari; print("torch", torch.__version__, "/ napari", napari.__version__)'))"
