#!/usr/bin/env bash
# The GPU check (benchmark/measurements/gpu_check.py) in one call of the device tool, from the repository root,
# with the wheels that benchmark/measurements/gpu_wheels.sh downloaded into .whl/ carried along:
#   run  command "bash benchmark/measurements/gpu_check.sh"  carry [".whl"]  timeout_s 540
# Arguments go to gpu_check.py. Everything it writes lands in $OUT (gpu_check.json, gpu_check.md, gpu_check.log).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-gpu_check_out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/nvidia-smi.txt"
python3 -m benchmark.measurements.gpu_check --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
