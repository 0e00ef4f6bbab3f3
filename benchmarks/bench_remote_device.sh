#!/usr/bin/env bash
# Issue 27's remote figure where it can be taken: bench_workers on the GPU machine (16 cores), the S3 server
# and the latency proxy on CPUs of their own (--split-cpus), as an object store on other machines would be.
#   bash benchmarks/prepare_remote_wheels.sh     # here, once: the wheels the device lacks, into .whl/
#   device run, carry [".whl"] (about 6 min):
#     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
#       && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && bash benchmarks/bench_remote_device.sh
#   SMOKE=1 PYTHON=.venv/bin/python bash benchmarks/bench_remote_device.sh   # any machine: 32 images, 1 pass
# The printed table and ratios land in $OUT/bench_workers.txt. No nginx there: its rows are left out.
set -euo pipefail
source "$(dirname "$0")/device_env.sh"
OUT=${OUT:-/tmp/bench_remote}
mkdir -p "$OUT"
images=512 passes=3   # 8,192 samples, the issue's size
[ -n "${SMOKE:-}" ] && images=32 passes=1
# 8 encoder processes build the store in a minute or two there (bench_gpu's builds ran 1-16)
"$PY" benchmarks/bench_workers.py --work /tmp/bench-remote --images "$images" --passes "$passes" \
  --encoders 8 --split-cpus "$@" 2>&1 | tee "$OUT/bench_workers.txt"
