#!/usr/bin/env bash
# Create .venv (once) and install latentstore with its encoder and test extras into it.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo ">> creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import latentstore, compressai, timm, torchvision, webdataset, zarr, google_crc32c, tensorboard, yaml, fsspec, s3fs, moto, pytest, xdist, matplotlib" 2>/dev/null; then
    echo ">> installing latentstore and its dependencies (torch, compressai, timm, ...; a few minutes)"
    # pip prints a line per package it collects, downloads and installs: the progress of those minutes.
    # Some pip configurations list local indexes that do not exist here; hide those warnings only.
    .venv/bin/pip install -e '.[encode,test]' 2>&1 | { grep --line-buffered -v "^WARNING: Location" || true; }
fi
