#!/usr/bin/env bash
# Run once here (not on the GPU machine), after ../shared/device/prepare.sh: adds to .whl/ the wheels that
# bench_remote_device.sh needs there and the GPU machine lacks: moto's S3 server (flask), s3fs and its
# aiobotocore/aiohttp stack, fsspec, google-crc32c (which latentstore reads with). About 34 MB; with prepare.sh's wheels under the 64 MiB a run carries.
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
PY=${PYTHON:-python3}
"$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "moto[s3]" flask flask-cors s3fs fsspec google-crc32c 2>&1 | grep -v '^WARNING' || true
du -sh .whl
