# Sourced by the device scripts (bench_gpu.sh, bench_remote_device.sh): they run from the checkout's tree (the
# project is not installed on the GPU machine), output unbuffered, with $PYTHON (default python3) as $PY.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
