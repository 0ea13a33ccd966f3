"""Learning-phase steps per second of one or more training scripts, measured the same way for each.

Each script first fills its replay buffer once (the uniform warm-up, not timed) and checkpoints it. Every repetition
then resumes a fresh copy of that checkpoint in a new process for `--untimed-steps` learning steps, which pay for
start-up and compilation (torch.compile of the PAVE loss, by default) and are not timed, followed by `--steps` timed
learning steps. The time of the timed steps comes from the wall-clock stamps of the run's own TensorBoard events at
the first and last timed step; the compile seconds a run prints are reported separately. Repetitions of several
scripts are interleaved, so a slow spell of the machine hits all of them alike; the median over repetitions is
printed, with the ratio of each script's step time to the first script's.

A script is a name in this checkout (`td3_pave_continuous`) or the path of a script in another checkout, e.g. a git
worktree of an older commit, to compare before and after in one run:

    python benchmark/speed.py td3_continuous td3_pave_continuous --env-id Hopper-v5 --repetitions 5
    git worktree add /tmp/before HEAD~3
    python benchmark/speed.py /tmp/before/cleanrl_pave/td3_pave_continuous.py td3_pave_continuous -- --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = pathlib.Path(__file__).resolve().parents[1]
LOG_FREQ = 50  # the timed window starts and ends on logged steps; a multiple of TD3's policy_frequency and SAC's 50
COMPILE_LINE = re.compile(r"^compiled (.+) in ([0-9.]+) s", re.M)


def script_path(script: str) -> pathlib.Path:
    path = pathlib.Path(script) if script.endswith(".py") else REPO / "cleanrl_pave" / f"{script}.py"
    if not path.is_file():
        raise SystemExit(f"error: no script {path}")
    return path.resolve()


def run(script: str, flags: list[str], cwd: pathlib.Path) -> str:
    """Run `script` with `flags` (PYTHONPATH: the script's own checkout); its standard output."""
    path = script_path(script)
    result = subprocess.run([sys.executable, str(path), *flags], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(path.parents[1])})
    if result.returncode != 0:
        raise SystemExit(f"error: {script} failed: {result.stderr.strip().splitlines()[-1:]}")
    return result.stdout


def event_wall_times(run_dir: pathlib.Path) -> dict[int, float]:
    """Wall-clock time of each logged step, from the run's losses/qf1_loss events (written at log time)."""
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {event.step: event.wall_time for event in accumulator.Scalars("losses/qf1_loss")}


def measure(scripts: list[str], env_id: str, warmup: int, untimed: int, steps: int, repetitions: int,
            extra: list[str], workdir: pathlib.Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """SPS samples per script over the timed steps of `repetitions` resumed runs, and the compile seconds each
    run printed."""
    common = ["--env-id", env_id, "--learning-starts", str(warmup), "--eval-freq", "0", "--eval-episodes", "1",
              "--log-freq", str(LOG_FREQ), *extra]
    for index, script in enumerate(scripts):
        # checkpoint right after the warm-up; the run then takes one more step and ends
        run(script, [*common, "--total-timesteps", str(warmup + 1), "--checkpoint-freq", str(warmup),
                     "--run-name", f"warm_{index}"], workdir)
    samples = {script: [] for script in scripts}
    compile_seconds = {script: [] for script in scripts}
    first, last = warmup + untimed, warmup + untimed + steps
    for repetition in range(repetitions):
        for index, script in enumerate(scripts):
            name = f"{index}_{repetition}"
            shutil.copytree(workdir / "runs" / f"warm_{index}", workdir / "runs" / name)
            (workdir / "runs" / name / "results.json").unlink()
            output = run(script, [*common, "--total-timesteps", str(last), "--resume", "--run-name", name], workdir)
            wall = event_wall_times(workdir / "runs" / name)
            sps = steps / (wall[last] - wall[first])
            samples[script].append(sps)
            compile_seconds[script].append(sum(float(seconds) for _, seconds in COMPILE_LINE.findall(output)))
            print(f"  repetition {repetition + 1}/{repetitions}  {script:40s} {sps:8.1f} SPS  "
                  f"(compiled in {compile_seconds[script][-1]:.1f} s)", flush=True)
            shutil.rmtree(workdir / "runs" / name)
    return samples, compile_seconds


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
        samples, compile_seconds = measure(args.scripts, args.env_id, args.warmup, args.untimed_steps, args.steps,
                                           args.repetitions, extra, pathlib.Path(workdir))
    medians = {script: statistics.median(values) for script, values in samples.items()}
    reference = args.scripts[0]
    print(f"\n{args.env_id}, {args.steps} timed learning steps (after {args.untimed_steps} untimed) x "
          f"{args.repetitions} repetitions, flags: {extra or 'none'}")
    print(f"{'script':40s} {'median SPS':>10s} {'ms/step':>8s} {'compile s':>9s} {'step time vs first':>19s}")
    for script in args.scripts:
        ratio = medians[reference] / medians[script]
        print(f"{script:40s} {medians[script]:10.1f} {1000 / medians[script]:8.2f} "
              f"{statistics.median(compile_seconds[script]):9.1f} {ratio:18.2f}x")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"env_id": args.env_id, "steps": args.steps, "untimed_steps": args.untimed_steps, "flags": extra,
             "samples": samples, "median_sps": medians, "compile_seconds": compile_seconds}, indent=2))


if __name__ == "__main__":
    main()
