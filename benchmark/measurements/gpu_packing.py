"""How many runs to pack on one GPU: the aggregate learning-phase steps per second of N concurrent runs.

For each N of `--runs`, the suite runner (benchmark/run.py, `--gpus 0 --runs-per-gpu N`) starts N runs of one
script at once, seeds 1..N, each filling its replay buffer (`--warmup` steps, not timed), then `--untimed-steps`
learning steps (start-up and compilation) and `--steps` timed ones. Each run's steady SPS comes from the wall-clock
stamps of its own TensorBoard events at the first and last timed step (as in script_speed.py), and the aggregate is
their sum. That sum holds for runs that were timed together: the overlap (the time all N were in their timed steps,
over the time from the first one's start to the last one's end) says how far they were; raise --steps if it is
low (the runs start and compile at slightly different times).

    python -m benchmark.measurements.gpu_packing --runs 1 4 8 --set cudagraphs=true --json packing.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

from benchmark.measurements.script_speed import LOG_FREQ, loss_events

REPO = pathlib.Path(__file__).resolve().parents[2]


def measure_packing(script: str, env_id: str, runs: int, warmup: int, untimed: int, steps: int, sets: list[str],
                    out: pathlib.Path) -> dict:
    """N = `runs` concurrent runs on GPU 0 through the suite runner, with the runner's `--set` items `sets`: each
    run's steady SPS and the aggregate."""
    first, last = warmup + untimed, warmup + untimed + steps
    suite = {"description": f"{runs} concurrent runs of {script}", "seeds": list(range(1, runs + 1)),
             "envs": [env_id], "scripts": [script],
             "flags": {"total-timesteps": last, "learning-starts": warmup, "eval-freq": 0, "eval-episodes": 1,
                       "log-freq": LOG_FREQ}}
    suite_path = out / f"packing_{runs}.json"
    suite_path.write_text(json.dumps(suite))
    command = [sys.executable, str(REPO / "benchmark" / "run.py"), "--suite", str(suite_path), "--out",
               str(out / f"packing_{runs}"), "--gpus", "0", "--runs-per-gpu", str(runs),
               *(item for flag in sets for item in ("--set", flag))]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: {runs} runs failed: {(result.stdout + result.stderr).strip().splitlines()[-3:]}")
    windows = []  # (wall time at the first timed step, at the last) of each run
    for run_dir in sorted((out / f"packing_{runs}" / "runs").iterdir()):
        events = loss_events(run_dir)
        windows.append((events[first].wall_time, events[last].wall_time))
    rates = [steps / (end - start) for start, end in windows]
    together = min(end for _, end in windows) - max(start for start, _ in windows)
    span = max(end for _, end in windows) - min(start for start, _ in windows)
    return {"runs": runs, "steady_sps_per_run": rates, "aggregate_sps": sum(rates),
            "overlap": max(together, 0.0) / span}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--script", default="td3_pave_continuous")
    parser.add_argument("--env-id", default="Hopper-v5")
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 4, 8], help="numbers of concurrent runs")
    parser.add_argument("--warmup", type=int, default=1000, help="replay transitions collected before learning")
    parser.add_argument("--untimed-steps", type=int, default=100, help="learning steps before the timed ones")
    parser.add_argument("--steps", type=int, default=1000, help=f"timed learning steps; a multiple of {LOG_FREQ}")
    parser.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE", dest="sets",
                        help="a script flag for every run, as the runner's --set (cudagraphs=true); repeatable")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.steps % LOG_FREQ or args.untimed_steps % LOG_FREQ:
        parser.error(f"--steps and --untimed-steps must be multiples of {LOG_FREQ}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-packing-") as work:
        for runs in args.runs:
            row = measure_packing(args.script, args.env_id, runs, args.warmup, args.untimed_steps, args.steps,
                                  args.sets, pathlib.Path(work))
            rows.append(row)
            print(f"{runs} concurrent runs: aggregate {row['aggregate_sps']:.1f} SPS, per run "
                  f"{', '.join(f'{sps:.1f}' for sps in row['steady_sps_per_run'])}; timed together "
                  f"{row['overlap']:.0%} of the time", flush=True)
    best = max(rows, key=lambda row: row["aggregate_sps"])
    print(f"best packing: {best['runs']} runs per GPU, {best['aggregate_sps']:.1f} SPS in all", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"script": args.script, "env_id": args.env_id,
                                                       "sets": args.sets, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
