"""Learning-phase steps per second of one or more training scripts, measured the same way for each.

Each script first fills its replay buffer once (the uniform warm-up, not timed) and checkpoints it. Every repetition
then resumes a fresh copy of that checkpoint in a new process for `--untimed-steps` learning steps, which pay for
start-up and compilation (torch.compile of the PAVE loss, by default) and are not timed, followed by `--steps` timed
learning steps. The steady SPS of the timed steps comes from the wall-clock stamps of the run's own TensorBoard
events at the first and last timed step; the compile seconds a run prints are reported separately, and so is the
SPS of the whole resumed run as results.json reports it (compilation and one final evaluation episode included).
Repetitions of several scripts are interleaved, so a slow spell of the machine hits all of them alike; the median
over repetitions is printed, with the ratio of each script's step time to the first script's.

A script is a name in this checkout (`td3_pave_continuous`) or the path of a script in another checkout, e.g. a git
worktree of an older commit, to compare before and after in one run:

    python benchmark/measurements/script_speed.py td3_continuous td3_pave_continuous --env-id Hopper-v5 \
        --repetitions 5
    git worktree add /tmp/before HEAD~3
    python benchmark/measurements/script_speed.py /tmp/before/cleanrl_pave/td3_pave_continuous.py \
        td3_pave_continuous -- --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = pathlib.Path(__file__).resolve().parents[2]
LOG_FREQ = 50  # the timed window starts and ends on logged steps; a multiple of TD3's policy_frequency and SAC's 50
COMPILE_LINE = re.compile(r"^compiled (.+) in ([0-9.]+) s", re.M)
# the line of a run whose compilation failed and which ran eager instead (compile_with_fallback's warning); torch's
# own notes on CUDA graphs it skipped are not printed by default, so they are not seen here
COMPILE_NOTE = re.compile(r"^warning: could not compile .*$", re.M)


def script_path(script: str) -> pathlib.Path:
    path = pathlib.Path(script) if script.endswith(".py") else REPO / "cleanrl_pave" / f"{script}.py"
    if not path.is_file():
        raise SystemExit(f"error: no script {path}")
    return path.resolve()


def run(script: str, flags: list[str], cwd: pathlib.Path) -> str:
    """Run `script` with `flags`; its standard output, then its standard error. The script's own checkout comes
    first on PYTHONPATH, the caller's after it (packages may live there, e.g. wheels installed with --target)."""
    path = script_path(script)
    python_path = os.pathsep.join(filter(None, [str(path.parents[1]), os.environ.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, str(path), *flags], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": python_path})
    if result.returncode != 0:
        raise SystemExit(f"error: {script} failed: {result.stderr.strip().splitlines()[-1:]}")
    return result.stdout + result.stderr


def loss_events(run_dir: pathlib.Path) -> dict:
    """The run's losses/qf1_loss events by step; each carries the wall-clock time it was logged at."""
    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # not the notice of the events a resume purged
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {event.step: event for event in accumulator.Scalars("losses/qf1_loss")}


def steady_sps(run_dir: pathlib.Path, first: int, last: int) -> tuple[float, float]:
    """Steps per second from logged step `first` to logged step `last`, by the wall-clock stamps of the run's
    losses/qf1_loss events (written at log time), and the loss logged at `last`."""
    events = loss_events(run_dir)
    return (last - first) / (events[last].wall_time - events[first].wall_time), events[last].value


def measure(variants: dict[str, tuple[str, list[str]]], env_id: str, warmup: int, steps: int, repetitions: int,
            extra: list[str], workdir: pathlib.Path, deadline: float = float("inf"),
            untimed: int = 100) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Rate samples per variant (label -> (script, flags of this variant alone)) from `repetitions` resumed runs of
    `untimed` + `steps` learning steps, each sample {"steady_sps": over the timed steps, "qf1_loss": the TD loss logged
    at the last one, "sps": the whole run's, "compile_s": what the run printed, "compile_notes": its compile-fallback
    warnings}. `extra` flags go to every run, the warm-ups too; no run starts after
    `deadline` (time.monotonic()). A variant whose run fails gets no more runs; returns (samples, the error of each
    failed variant)."""
    common = ["--env-id", env_id, "--learning-starts", str(warmup), "--eval-freq", "0", "--eval-episodes", "1",
              "--log-freq", str(LOG_FREQ), *extra]
    failures, warm = {}, {}
    for script in dict.fromkeys(script for script, _ in variants.values()):
        warm[script] = f"warm_{len(warm)}"
        try:  # checkpoint right after the warm-up; the run then takes one more step and ends
            run(script, [*common, "--total-timesteps", str(warmup + 1), "--checkpoint-freq", str(warmup),
                         "--run-name", warm[script]], workdir)
        except SystemExit as error:
            failures.update({label: f"warm-up: {error}" for label, (name, _) in variants.items() if name == script})
    samples = {label: [] for label in variants}
    first, last = warmup + untimed, warmup + untimed + steps
    for repetition in range(repetitions):
        for index, (label, (script, flags)) in enumerate(variants.items()):
            if label in failures:
                continue
            if time.monotonic() > deadline:
                print(f"  time is up: {label} left at {len(samples[label])} of {repetitions} repetitions", flush=True)
                continue
            name = f"run_{index}_{repetition}"
            shutil.copytree(workdir / "runs" / warm[script], workdir / "runs" / name)
            (workdir / "runs" / name / "results.json").unlink()
            try:
                output = run(script, [*common, *flags, "--total-timesteps", str(last), "--resume", "--run-name",
                                      name], workdir)
            except SystemExit as error:
                failures[label] = str(error)
                print(f"  {label} failed: {error}", flush=True)
                continue
            rate, last_loss = steady_sps(workdir / "runs" / name, first, last)
            sample = {"steady_sps": rate, "qf1_loss": last_loss,
                      "sps": json.loads((workdir / "runs" / name / "results.json").read_text())["sps"],
                      "compile_s": sum(float(seconds) for _, seconds in COMPILE_LINE.findall(output)),
                      "compile_notes": list(dict.fromkeys(COMPILE_NOTE.findall(output)))[:3]}
            samples[label].append(sample)
            print(f"  repetition {repetition + 1}/{repetitions}  {label:40s} {sample['steady_sps']:8.1f} steady SPS "
                  f"{sample['sps']:8.1f} run SPS  (compiled in {sample['compile_s']:.1f} s)", flush=True)
            shutil.rmtree(workdir / "runs" / name)
    return samples, failures


def medians(samples: dict[str, list[dict]], key: str) -> dict[str, float]:
    """Median of `key` over each variant's samples (NaN for a variant without samples)."""
    return {label: statistics.median(sample[key] for sample in values) if values else float("nan")
            for label, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Arguments after -- go to every script.")
    parser.add_argument("scripts", nargs="+", help="script names (td3_pave_continuous) or paths of script files")
    parser.add_argument("--env-id", default="Hopper-v5")
    parser.add_argument("--warmup", type=int, default=1000, help="replay transitions collected before learning")
    parser.add_argument("--untimed-steps", type=int, default=100,
                        help=f"learning steps run before timing (start-up, compilation); a multiple of {LOG_FREQ}")
    parser.add_argument("--steps", type=int, default=1000, help=f"timed learning steps; a multiple of {LOG_FREQ}")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--json", help="also write the samples and medians to this file")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    for script in args.scripts:
        script_path(script)
    if min(args.warmup, args.untimed_steps, args.steps, args.repetitions) <= 0:
        raise SystemExit("error: --warmup, --untimed-steps, --steps and --repetitions must be positive")
    if args.untimed_steps % LOG_FREQ or args.steps % LOG_FREQ or args.warmup % LOG_FREQ:
        raise SystemExit(f"error: --warmup, --untimed-steps and --steps must be multiples of {LOG_FREQ}")

    with tempfile.TemporaryDirectory(prefix="speed_") as workdir:
        samples, failures = measure({script: (script, []) for script in args.scripts}, args.env_id, args.warmup,
                                    args.steps, args.repetitions, extra, pathlib.Path(workdir),
                                    untimed=args.untimed_steps)
    if failures:
        raise SystemExit("\n".join(failures.values()))
    steady, whole, compile_s = (medians(samples, key) for key in ("steady_sps", "sps", "compile_s"))
    reference = args.scripts[0]
    print(f"\n{args.env_id}, {args.steps} timed learning steps (after {args.untimed_steps} untimed) x "
          f"{args.repetitions} repetitions, flags: {extra or 'none'}")
    print(f"{'script':40s} {'steady SPS':>10s} {'ms/step':>8s} {'step time vs first':>19s} {'compile s':>9s} "
          f"{'run SPS':>8s}")
    for script in args.scripts:
        print(f"{script:40s} {steady[script]:10.1f} {1000 / steady[script]:8.2f} "
              f"{steady[reference] / steady[script]:18.2f}x {compile_s[script]:9.1f} {whole[script]:8.1f}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"env_id": args.env_id, "steps": args.steps, "untimed_steps": args.untimed_steps, "flags": extra,
             "samples": samples, "median_steady_sps": steady, "median_sps": whole, "median_compile_s": compile_s},
            indent=2))


if __name__ == "__main__":
    main()
