"""The reproduction campaign's queue: the LunarLanderContinuous-v3 runs and the Pendulum reruns, in two lanes.

    python benchmark/reproduction/queue.py --lane a --out /work/repro_ll &   # one lane per core, one thread each
    python benchmark/reproduction/queue.py --lane b --out /work/repro_ll &

Each lane runs its entries one after another, each through `benchmark/run.py` (the paper suites filtered to one
run, paper settings; the runner resumes an interrupted run exactly and skips a finished one), so a lane stopped at
any moment continues where it was when started again. After each run it copies the run's small results into this
folder (`--data`): `results.json`, for TD3 the critic-geometry JSON of the final model, and for runs with
`--geometry-freq` the geometry logged during training (`geometry_during_training.json`, from its TensorBoard
events). A failed run stops its lane with its log named: it is investigated, not rerun with other settings.
`--dry-run` prints both lanes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LL, PENDULUM = "LunarLanderContinuous-v3", "Pendulum-v1"
SEEDS = (178132, 410580, 922852)
DURING_TRAINING = {"geometry-freq": 100000}  # geometry at 1e5 ... 5e5 steps: the paper's during-training table


def entry(env: str, script: str, seed: int, data: str, out: str = "", flags: dict | None = None) -> dict:
    suite = "td3_main" if script.startswith("td3") else "sac_main"
    return {"env": env, "script": script, "seed": seed, "suite": suite, "flags": flags or {}, "data": data,
            "out": out}


def lanes() -> dict[str, list[dict]]:
    """Two lanes of about the same length (estimated from benchmark/measurements/script_speed.py at one thread); every
    tier-1 cell's first seed finishes before any cell's third seed starts."""
    s1, s2, s3 = SEEDS
    a = [entry(LL, "td3_pave_continuous", seed, "lunarlander", flags=DURING_TRAINING) for seed in SEEDS]
    a += [entry(LL, "td3_caps_continuous", s3, "lunarlander"), entry(LL, "sac_caps_continuous", s3, "lunarlander"),
          entry(PENDULUM, "td3_pave_continuous", 410580, "pendulum_rerun", out="pendulum_rerun")]
    b = []
    for seed in SEEDS:
        b += [entry(LL, "td3_continuous", seed, "lunarlander", flags=DURING_TRAINING),
              entry(LL, "sac_continuous", seed, "lunarlander"), entry(LL, "sac_pave_continuous", seed, "lunarlander")]
    for seed in (s1, s2):
        b += [entry(LL, "td3_caps_continuous", seed, "lunarlander"), entry(LL, "sac_caps_continuous", seed, "lunarlander")]
    b += [entry(PENDULUM, "td3_continuous", seed, "pendulum_rerun", out="pendulum_rerun") for seed in SEEDS]
    b += [entry(PENDULUM, "td3_grad_continuous", seed, "pendulum_rerun", out="pendulum_rerun") for seed in (s2, s3)]
    return {"a": a, "b": b}


def run_name(item: dict) -> str:
    return f"{item['env']}__{item['script']}__{item['seed']}"


def runner_command(item: dict, out: Path) -> list[str]:
    command = [sys.executable, str(REPO / "benchmark" / "run.py"), "--suite", item["suite"], "--out", str(out),
               "--workers", "1", "--filter", f"env={item['env']}", "--filter", f"script={item['script']}",
               "--filter", f"seed={item['seed']}"]
    for name, value in item["flags"].items():
        command += ["--set", f"{name}={value}"]
    return command


def export(item: dict, run_dir: Path, data_dir: Path) -> None:
    """Copy a finished run's small results into the repository's data folder."""
    target = data_dir / item["data"] / run_name(item)
    target.mkdir(parents=True, exist_ok=True)
    if item["script"].startswith("td3"):
        subprocess.run([sys.executable, "-m", "cleanrl_pave.critic_geometry", "--model",
                        str(run_dir / f"{item['script']}.cleanrl_model"), "--output", str(target / "geometry.json")],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    if "geometry-freq" in item["flags"]:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        events.Reload()
        during = {tag.split("/", 1)[1]: {str(event.step): event.value for event in events.Scalars(tag)}
                  for tag in events.Tags()["scalars"] if tag.startswith("geometry/")}
        (target / "geometry_during_training.json").write_text(json.dumps(during, indent=2) + "\n")
    shutil.copyfile(run_dir / "results.json", target / "results.json")  # last: its presence means exported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lane", choices=("a", "b"), required=True)
    parser.add_argument("--out", type=Path, required=True, help="the runs' output folder, outside the repository")
    parser.add_argument("--data", type=Path, default=HERE, help="where the small results are copied")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    for item in lanes()[args.lane]:
        out = (args.out / item["out"]) if item["out"] else args.out
        if args.dry_run:
            print(" ".join(runner_command(item, out)))
            continue
        if (args.data / item["data"] / run_name(item) / "results.json").exists():
            continue
        run_dir = out / "runs" / run_name(item)
        if not (run_dir / "results.json").exists():
            print(f"lane {args.lane}: {run_name(item)}", flush=True)
            code = subprocess.call(runner_command(item, out), cwd=REPO)
            if code != 0:
                print(f"lane {args.lane}: {run_name(item)} ended with exit {code} (log: "
                      f"{out / 'logs' / (run_name(item) + '.log')}); lane stopped", flush=True)
                return code
        export(item, run_dir, args.data)
        print(f"lane {args.lane}: exported {run_name(item)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
