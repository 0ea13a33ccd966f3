#!/usr/bin/env bash
# Prepare LeanRL's TD3 and SAC torch.compile scripts for benchmark/measurements/peer_speed.py, in the ignored .peers/:
#   .peers/leanrl/   the two scripts at LeanRL commit 8dbb633 (MIT licence, copied with it), unchanged
#   .peers/stubs/    a no-op `wandb` module (init, log): the scripts import W&B; these runs log nothing
#   .peers/whl/      the wheels they need beyond the training scripts' (.whl/, gpu_wheels.sh): tensordict and torchrl
#                    0.7.2 (the newest that run these scripts unchanged: with 0.14 the acting policy's output keeps
#                    requires_grad and .numpy() fails), tqdm; CPython 3.12, manylinux x86_64
# Usage: bash benchmark/measurements/peer_scripts.sh PATH_TO_A_LEANRL_GIT_CHECKOUT
set -euo pipefail
cd "$(dirname "$0")/../.."
LEANRL=${1:?usage: peer_scripts.sh PATH_TO_A_LEANRL_GIT_CHECKOUT (git clone https://github.com/pytorch-labs/LeanRL)}
COMMIT=8dbb6336b7f6cc65cdbbeb2e86637c38867e2677
rm -rf .peers && mkdir -p .peers/leanrl .peers/stubs/wandb .peers/whl
for script in td3_continuous_action_torchcompile.py sac_continuous_action_torchcompile.py; do
    git --git-dir "$LEANRL/.git" show "$COMMIT:leanrl/$script" > ".peers/leanrl/$script" 2>/dev/null \
        || git --git-dir "$LEANRL" show "$COMMIT:leanrl/$script" > ".peers/leanrl/$script"
done
git --git-dir "$LEANRL/.git" show "$COMMIT:LICENSE" > .peers/leanrl/LICENSE 2>/dev/null \
    || git --git-dir "$LEANRL" show "$COMMIT:LICENSE" > .peers/leanrl/LICENSE
printf '"""No-op stand-in for W&B in the peer speed runs: they log nothing."""\n\n\ndef init(*args, **kwargs):\n    return None\n\n\ndef log(*args, **kwargs):\n    return None\n' \
    > .peers/stubs/wandb/__init__.py
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .peers/whl tensordict==0.7.2 torchrl==0.7.2 tqdm==4.70.1 orjson==3.13.0 \
    importlib-metadata==10.2.0 zipp==4.1.2
ls .peers/leanrl .peers/whl
du -sh .peers
