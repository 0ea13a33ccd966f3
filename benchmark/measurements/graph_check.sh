#!/usr/bin/env bash
# The check of --cudagraphs (each whole update recorded as CUDA graphs; benchmark/measurements/graph_check.py) in one
# call of the device tool, from the repository root, with the wheels of benchmark/measurements/gpu_wheels.sh:
#   run  command "bash benchmark/measurements/graph_check.sh"  carry [".whl"]  timeout_s 580
# The graph-capture probe first (what torch records here, seconds), then the three stages, each bounded so that the
# call ends inside its limit and keeps what finished: same training (150 s), every script records (150 s), speed
# (220 s). Everything lands in $OUT (graph_check.json and the logs).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-graph_check_out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/nvidia-smi.txt"
timeout 40 python3 -m benchmark.measurements.graph_capture_probe --json "$out/graph_capture_probe.json" 2>&1 \
    | tee "$out/graph_capture_probe.log"
for stage in 1 2 3; do
    limit=$([ "$stage" = 3 ] && echo 220 || echo 150)
    timeout "$limit" python3 -m benchmark.measurements.graph_check --stages "$stage" --out "$out/stage$stage" 2>&1 \
        | tee "$out/stage$stage.log"
done
