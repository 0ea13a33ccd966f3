#!/usr/bin/env bash
# Download into .whl/ (ignored by git) the wheels the GPU machine lacks for the training scripts: its image has
# Python 3.12 with PyTorch, TensorBoard, NumPy, cloudpickle, imageio and packaging, but no gymnasium, MuJoCo or tyro,
# and it reaches no package registry. These are the versions the project is tested with here, for CPython 3.12 on
# manylinux x86_64, one version each (two would stop the install there). W&B is left out: the scripts import it only
# with --track. typing-extensions is carried because typeguard needs a newer one than the image may hold.
# benchmark/measurements/gpu_check.sh installs them there:
#   run "bash benchmark/measurements/gpu_check.sh" with carry [".whl"].
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=(
    gymnasium==1.4.0 farama-notifications==0.0.6
    mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 glfw==2.11.0 pyopengl==3.1.10 websockets==17.4
    tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 typing-extensions==4.16.0
)
rm -rf .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
ls .whl
du -sh .whl
