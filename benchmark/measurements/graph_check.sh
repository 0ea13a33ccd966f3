#!/usr/bin/env bash
# The check of --cudagraphs (each whole update recorded as CUDA graphs; benchmark/measurements/graph_check.py) in one
# call of the device tool, from the repository root, with the wheels of benchmark/measurements/gpu_wheels.sh:
#   run  command "bash benchmark/measurements/graph_check.sh"  carry [".whl"]  timeout_s 580
#   run  command "bash benchmark/measurements/graph_check.sh profile"  carry [".whl"]  timeout_s 540   (stage 4 only)
# The graph-capture probe first (what torch records here, seconds) and the GPU tests of tests/test_cuda_graphs.py
# (100 s), then the three stages, each bounded so that the call ends inside its limit and keeps what finished: same
# training (130 s), every script records (110 s, 12 at a time), speed (170 s). Everything lands in $OUT
# (graph_check.json, rewritten as each script finishes, and the logs).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-graph_check_out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/nvidia-smi.txt"
if [ "${1:-}" = profile ]; then  # a second call if a speed target is missed: where each script's step time goes
    timeout 500 python3 -m benchmark.measurements.graph_check --stages 4 --learning-steps 3000 --out "$out/stage4" \
        2>&1 | tee "$out/stage4.log"
    exit
fi
timeout 30 python3 -m benchmark.measurements.graph_capture_probe --json "$out/graph_capture_probe.json" 2>&1 \
    | tee "$out/graph_capture_probe.log"
# PAVE's terms replayed as a CUDA graph against the autograd reference (the GPU-only tests; the rest run on a CPU)
timeout 100 python3 -m pytest -q -n 0 -p no:cacheprovider tests/test_cuda_graphs.py 2>&1 | tee "$out/pytest.log"
for stage in 1 2 3; do
    limit=$(case $stage in 1) echo 130;; 2) echo 110;; 3) echo 170;; esac)
    timeout "$limit" python3 -m benchmark.measurements.graph_check --stages "$stage" --workers 12 \
        --out "$out/stage$stage" 2>&1 | tee "$out/stage$stage.log"
done
