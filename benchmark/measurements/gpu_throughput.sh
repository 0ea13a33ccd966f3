#!/usr/bin/env bash
# One device-tool call for GPU throughput, after graph_check.sh (which checks --cudagraphs itself): our TD3/SAC bases
# against LeanRL's scripts (peer_speed.py) and the aggregate SPS of 1, 4 and 8 concurrent TD3 PAVE --cudagraphs runs
# on one GPU (gpu_packing.py). Prepare first, here:
#   bash benchmark/measurements/gpu_wheels.sh && bash benchmark/measurements/peer_scripts.sh PATH_TO_LEANRL_CHECKOUT
# then: run  command "bash benchmark/measurements/gpu_throughput.sh"  carry [".whl", ".peers"]  timeout_s 580
# (the two steps are bounded by 330 + 150 s, so the call ends within its limit even if one hangs)
# Estimated on the H200 from the GPU check's speeds (benchmark/measurements/gpu.md): about 5 minutes for the peers and
# under 3 for the packing. Everything lands in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-gpu_throughput_out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    .peers/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/nvidia-smi.txt"
timeout 330 python3 -m benchmark.measurements.peer_speed --json "$out/peer_speed.json" 2>&1 | tee "$out/peer_speed.log"
timeout 150 python3 -m benchmark.measurements.gpu_packing --runs 1 4 8 --set cudagraphs=true \
    --json "$out/gpu_packing.json" 2>&1 | tee "$out/gpu_packing.log"
nvidia-smi 2>&1 | tail -n 15 > "$out/nvidia-smi-after.txt"
