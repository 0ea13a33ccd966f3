"""Our TD3 and SAC bases against LeanRL's torch.compile + CUDA-graph scripts, side by side in one call (a GPU check).

LeanRL (github.com/pytorch-labs/LeanRL, CleanRL's speed fork) records each whole update as a CUDA graph. Its
`td3_continuous_action_torchcompile.py` and `sac_continuous_action_torchcompile.py` run here as published, at their
own settings, with `--compile --cudagraphs`; their speed is what they print (steps per second after learning starts
and 3 burn-in steps). Ours run at LeanRL's settings (ReLU 256-256, batch 256, learning rate 3e-4, one gradient step
per env step; SAC with one learning rate where LeanRL's critic has 1e-3) in each of our `--modes`, timed by
script_speed.py (steady learning-phase steps per second from the run's TensorBoard stamps). Every run has the same
env, warm-up and number of learning steps.

The LeanRL scripts and the wheels they need beyond the training scripts' (tensordict, torchrl, tqdm) are prepared
into the ignored `.peers/` by benchmark/measurements/peer_scripts.sh; their W&B logging is replaced by a no-op module
(the runs log nothing). On the device machine:

    bash benchmark/measurements/gpu_throughput.sh      # run(command=..., carry=[".whl", ".peers"]), with the packing
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

from benchmark.measurements.script_speed import LOG_FREQ, measure, medians

REPO = pathlib.Path(__file__).resolve().parents[2]
PEERS = REPO / ".peers"
LEANRL_SCRIPTS = {"td3": "td3_continuous_action_torchcompile.py", "sac": "sac_continuous_action_torchcompile.py"}
OUR_SCRIPTS = {"td3": "td3_continuous", "sac": "sac_continuous"}
# LeanRL's settings, as flags of our bases (their Args defaults at commit 8dbb633)
MATCHED = {"td3": ["--activation", "relu", "--hidden-sizes", "256", "256", "--batch-size", "256",
                   "--learning-rate", "3e-4"],
           "sac": ["--activation", "relu", "--hidden-sizes", "256", "256", "--batch-size", "256",
                   "--learning-rate", "3e-4", "--train-freq", "1", "--gradient-steps", "1"]}
MODES = {"eager": ["--no-compile", "--no-cudagraphs"], "cudagraphs": ["--cudagraphs"]}
SPEED = re.compile(r"([0-9.]+) sps")


def leanrl_sps(backbone: str, env_id: str, learning_starts: int, steps: int, cuda: bool, cwd: pathlib.Path) -> float:
    """The last speed LeanRL's script printed (its tqdm line, every 100 steps) in a run of `learning_starts` +
    `steps` env steps."""
    script = PEERS / "leanrl" / LEANRL_SCRIPTS[backbone]
    if not script.is_file():
        raise SystemExit(f"error: no {script}: run benchmark/measurements/peer_scripts.sh first")
    python_path = os.pathsep.join(filter(None, [str(PEERS / "stubs"), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, str(script), "--env-id", env_id, "--total-timesteps", str(learning_starts + steps),
               "--learning-starts", str(learning_starts), "--compile", "--cudagraphs", *([] if cuda else ["--no-cuda"])]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": python_path, "WANDB_MODE": "disabled"})
    speeds = SPEED.findall(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"error: LeanRL {backbone} failed (exit {done.returncode}): "
                         f"{done.stderr.strip().splitlines()[-1:]}")
    if not speeds:
        raise SystemExit(f"error: LeanRL {backbone} printed no speed (it prints one every 100 steps once learning "
                         "has started: raise --steps)")
    return float(speeds[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="Hopper-v5")
    parser.add_argument("--backbones", nargs="+", choices=sorted(OUR_SCRIPTS), default=["td3", "sac"])
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["eager", "cudagraphs"],
                        help="our runs' modes")
    parser.add_argument("--warmup", type=int, default=5000, help="env steps before learning, for every run")
    parser.add_argument("--steps", type=int, default=3000, help=f"learning steps timed; a multiple of {LOG_FREQ}")
    parser.add_argument("--untimed-steps", type=int, default=200,
                        help="our runs' learning steps before timing (compilation); LeanRL's own burn-in is 3")
    parser.add_argument("--no-cuda", action="store_true", help="on the CPU: a dry run of the tool, not a measurement")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.steps % LOG_FREQ or args.untimed_steps % LOG_FREQ or args.warmup % LOG_FREQ:
        parser.error(f"--warmup, --steps and --untimed-steps must be multiples of {LOG_FREQ}")
    if args.steps < 200:
        parser.error("--steps must be at least 200 (LeanRL's scripts print their speed every 100 steps)")
    device = ["--no-cuda"] if args.no_cuda else []
    rows = []
    with tempfile.TemporaryDirectory(prefix="peer-speed-") as work:
        work = pathlib.Path(work)
        for backbone in args.backbones:
            started = time.monotonic()
            peer = leanrl_sps(backbone, args.env_id, args.warmup, args.steps, not args.no_cuda, work)
            rows.append({"backbone": backbone, "run": f"LeanRL {LEANRL_SCRIPTS[backbone]}", "sps": peer})
            print(f"LeanRL {backbone}: {peer:.1f} SPS ({time.monotonic() - started:.0f} s)", flush=True)
            variants = {f"{OUR_SCRIPTS[backbone]} {mode}": (OUR_SCRIPTS[backbone], MODES[mode]) for mode in args.modes}
            (work / backbone).mkdir()
            samples, failures = measure(variants, args.env_id, args.warmup, args.steps, 1,
                                        [*MATCHED[backbone], *device], work / backbone, untimed=args.untimed_steps)
            for label, sps in medians(samples, "steady_sps").items():
                rows.append({"backbone": backbone, "run": f"ours, {label}", "sps": sps,
                             "error": failures.get(label, "")})
    print(f"\n{args.env_id}, {args.steps} timed learning steps after {args.warmup} warm-up steps, LeanRL's settings")
    print(f"{'backbone':8s} {'run':58s} {'SPS':>8s} {'vs LeanRL':>9s}")
    for row in rows:
        peer = next(other["sps"] for other in rows if other["backbone"] == row["backbone"])
        print(f"{row['backbone']:8s} {row['run']:58s} {row['sps']:8.1f} {row['sps'] / peer:8.2f}x"
              + (f"  {row['error']}" if row.get("error") else ""))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"env_id": args.env_id, "steps": args.steps,
                                                       "warmup": args.warmup, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
