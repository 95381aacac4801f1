#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite. GUI tests run under a
# virtual X server started by pytest-xvfb. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m slow` for the slow tests,
# `bash scripts/test.sh -m gpu` for the CUDA tests on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
