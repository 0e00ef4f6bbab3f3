#!/usr/bin/env bash
# Set up, then run the whole test suite on CPU, offline (slow-marked tests included), one pytest
# worker per core (pytest-xdist). A test file stays on one worker (--dist loadfile): its
# module-scoped stores are built once. Pass "-n 0" to run in this process, e.g. under a debugger.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -q --durations=15 -n auto --dist loadfile "$@"
