#!/usr/bin/env bash
# Set up, then run the whole test suite on CPU, offline (slow-marked tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -q --durations=15 "$@"
