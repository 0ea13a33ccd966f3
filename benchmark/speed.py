"""Learning-phase steps per second of one or more training scripts, measured the same way for each.

Each script first fills its replay buffer once (the uniform warm-up, not timed) and checkpoints it. Every repetition
then resumes a fresh copy of that checkpoint for `--steps` learning steps in a new process and reads two rates: the
SPS the run reports in results.json (the whole resumed run: also compilation at the first update, if any, and one
short final evaluation episode) and the steady SPS between the first and the last step it logged (TensorBoard wall
times; --log-freq apart, 100 steps by default), which leaves those out. Repetitions of several scripts are
interleaved, so a slow spell of the machine hits all of them alike; the median over repetitions is printed, with the
ratio of each script's step time to the first script's.

    python benchmark/speed.py td3_continuous td3_pave_continuous --env-id Hopper-v5 --repetitions 5
    python benchmark/speed.py sac_continuous --steps 1000 -- --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = pathlib.Path(__file__).resolve().parents[1]


def run(script: str, flags: list[str], cwd: pathlib.Path) -> None:
    command = [sys.executable, str(REPO / "cleanrl_pave" / f"{script}.py"), *flags]
    # keep the caller's PYTHONPATH behind the repo: packages may live there (e.g. wheels installed with --target)
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": python_path})
    if result.returncode != 0:
        raise SystemExit(f"error: {script} failed: {result.stderr.strip().splitlines()[-1:]}")


def steady_sps(run_dir: pathlib.Path) -> float:
    """Steps per second between the first and the last learning step a run logged (NaN if it logged fewer than two)."""
    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # not the notice of the events a resume purged
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    events = accumulator.Scalars("losses/qf1_loss")
    if len(events) < 2:
        return float("nan")
    return (events[-1].step - events[0].step) / (events[-1].wall_time - events[0].wall_time)


def measure(variants: dict[str, tuple[str, list[str]]], env_id: str, warmup: int, steps: int, repetitions: int,
            extra: list[str], workdir: pathlib.Path,
            deadline: float = float("inf")) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Rate samples per variant (label -> (script, flags of this variant alone)): `repetitions` resumed runs of `steps`
    learning steps each, every sample {"sps": ..., "steady_sps": ...}. `extra` flags go to every run, the warm-ups too;
    no run starts after `deadline` (time.monotonic()). A variant whose run fails gets no more runs; returns (samples,
    the error of each failed variant)."""
    common = ["--env-id", env_id, "--learning-starts", str(warmup), "--eval-freq", "0", "--eval-episodes", "1", *extra]
    failures = {}
    for script in dict.fromkeys(script for script, _ in variants.values()):
        try:  # checkpoint right after the warm-up; the run then takes one more step and ends
            run(script, [*common, "--total-timesteps", str(warmup + 1), "--checkpoint-freq", str(warmup),
                         "--run-name", f"warm_{script}"], workdir)
        except SystemExit as error:
            failures.update({label: f"warm-up: {error}" for label, (name, _) in variants.items() if name == script})
    samples = {label: [] for label in variants}
    for repetition in range(repetitions):
        for index, (label, (script, flags)) in enumerate(variants.items()):
            if label in failures:
                continue
            if time.monotonic() > deadline:
                print(f"  time is up: {label} left at {len(samples[label])} of {repetitions} repetitions", flush=True)
                continue
            name = f"run_{index}_{repetition}"
            shutil.copytree(workdir / "runs" / f"warm_{script}", workdir / "runs" / name)
            (workdir / "runs" / name / "results.json").unlink()
            try:
                run(script, [*common, *flags, "--total-timesteps", str(warmup + steps), "--resume", "--run-name",
                             name], workdir)
            except SystemExit as error:
                failures[label] = str(error)
                print(f"  {label} failed: {error}", flush=True)
                continue
            sample = {"sps": json.loads((workdir / "runs" / name / "results.json").read_text())["sps"],
                      "steady_sps": steady_sps(workdir / "runs" / name)}
            samples[label].append(sample)
            print(f"  repetition {repetition + 1}/{repetitions}  {label:40s} {sample['sps']:8.1f} SPS "
                  f"{sample['steady_sps']:8.1f} steady SPS", flush=True)
            shutil.rmtree(workdir / "runs" / name)
    return samples, failures


def medians(samples: dict[str, list[dict]], key: str) -> dict[str, float]:
    """Median of `key` over each variant's samples (NaN for a variant without samples)."""
    return {label: statistics.median(sample[key] for sample in values) if values else float("nan")
            for label, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Arguments after -- go to every script.")
    parser.add_argument("scripts", nargs="+", help="script names, e.g. td3_continuous td3_pave_continuous")
    parser.add_argument("--env-id", default="Hopper-v5")
    parser.add_argument("--warmup", type=int, default=1000, help="replay transitions collected before timing")
    parser.add_argument("--steps", type=int, default=1000, help="learning steps per repetition")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--json", help="also write the samples and medians to this file")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    for script in args.scripts:
        if not (REPO / "cleanrl_pave" / f"{script}.py").exists():
            raise SystemExit(f"error: no script cleanrl_pave/{script}.py")
    if min(args.warmup, args.steps, args.repetitions) <= 0:
        raise SystemExit("error: --warmup, --steps and --repetitions must be positive")

    with tempfile.TemporaryDirectory(prefix="speed_") as workdir:
        samples, failures = measure({script: (script, []) for script in args.scripts}, args.env_id, args.warmup,
                                    args.steps, args.repetitions, extra, pathlib.Path(workdir))
    if failures:
        raise SystemExit("\n".join(failures.values()))
    median_sps, median_steady = medians(samples, "sps"), medians(samples, "steady_sps")
    reference = args.scripts[0]
    print(f"\n{args.env_id}, {args.steps} learning steps x {args.repetitions} repetitions, flags: {extra or 'none'}")
    print(f"{'script':32s} {'median SPS':>10s} {'ms/step':>8s} {'step time vs ' + reference:>24s} {'steady SPS':>10s}")
    for script in args.scripts:
        ratio = median_sps[reference] / median_sps[script]
        print(f"{script:32s} {median_sps[script]:10.1f} {1000 / median_sps[script]:8.2f} {ratio:23.2f}x "
              f"{median_steady[script]:10.1f}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"env_id": args.env_id, "steps": args.steps, "flags": extra,
                                                       "samples": samples, "median_sps": median_sps,
                                                       "median_steady_sps": median_steady}, indent=2))

if __name__ == "__main__":
    main()
