#!/usr/bin/env bash
# The one device benchmark: build img/s (CPU encoders 1..N, --device cuda), pure resnet50-aa step rate
# (fp32, bf16), trainer samples/s and data wait on the store it builds, printed side by side at the end.
#   bash benchmarks/bench_gpu.sh             # GPU node, full sizes (about 6 min); results in $OUT
#   SMOKE=1 bash benchmarks/bench_gpu.sh     # any machine, tiny sizes (2-3 min on 2 cores)
# Runs from the tree (PYTHONPATH), untrained weights, generated images: nothing is downloaded.
set -euo pipefail
source "$(dirname "$0")/device_env.sh"
OUT=${OUT:-/tmp/bench_gpu}
args=(--out "$OUT")
[ -n "${SMOKE:-}" ] && args+=(--smoke)
exec "$PY" benchmarks/bench_gpu.py "${args[@]}" "$@"
