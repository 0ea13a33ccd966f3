"""On a GPU: does `--cudagraphs` (each whole update and the acting policy recorded as CUDA graphs) train what eager
training trains, does every script record, and how fast is it? One device call (graph_check.sh beside this file).

1. Same training. For each of `--scripts` (default: the TD3 and SAC bases and PAVE), two runs with the same seed of
   `--learning-steps` learning steps on `--env-id`, logging every 2 steps: `--compile` (the same compiled losses,
   launched from Python) and `--cudagraphs` (recorded after 3 eager updates, then replayed). Reported per script: the
   largest absolute and relative difference of each logged loss over the run, and the final evaluation returns.
2. Every script records. Each of the 22 scripts runs briefly with `--cudagraphs` on Pendulum-v1: it must finish,
   print "recorded ... as a CUDA graph" for each update function and the acting policy, and print no warning that
   a loss could not compile (a failed recording stops the run with an error line).
3. Speed. Steady learning-phase steps per second of `--scripts` on `--env-id` in their default mode and with
   `--cudagraphs`, side by side (benchmark/measurements/script_speed.py), and the ratio.
4. (Only when asked, `--stages 4`.) Where a step's time goes: each of `--scripts` with `--cudagraphs` for
   `--learning-steps` learning steps under cProfile, the host's time per function (the env step, acting and its read
   back, sampling, the graph replays, logging), top 25 by own time. A replay only enqueues work, so the GPU's time
   shows where the host next waits for it: the acting policy's read back of its action.

    python -m benchmark.measurements.graph_check --out $OUT                    # on the GPU machine
    python -m benchmark.measurements.graph_check --device cpu --scripts td3_continuous --learning-steps 40 \\
        --stages 1 --out /tmp/graph_check          # a dry run on a CPU, where both modes only compile
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import pstats
import re
import subprocess
import sys
import tempfile

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from benchmark.measurements.script_speed import measure, medians

REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_SCRIPTS = ["td3_continuous", "sac_continuous", "td3_pave_continuous", "sac_pave_continuous"]
MODES = {"compile": ["--compile"], "cudagraphs": ["--cudagraphs"]}
# (file, function) of a step's parts, for stage 4: the env step, acting, sampling, storing, the updates, logging
KEY_FUNCTIONS = [("checkpointing.py", "(step)"), ("cuda_graphs.py", "(__call__)"), ("cuda_graphs.py", "(_record)"),
                 ("td3_", "(sample)"), ("sac_", "(sample)"), ("td3_", "(add)"), ("sac_", "(add)"),
                 ("writer.py", "(add_scalar)"), ("~", "(<method 'cpu' of 'torch._C.TensorBase' objects>)")]
RECORDED = re.compile(r"^recorded (.+) as a CUDA graph", re.MULTILINE)
FALLBACK = re.compile(r"^warning: could not compile .*$", re.MULTILINE)


def run(script: str, flags: list[str], cwd: pathlib.Path, timeout: float = 900) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, str(REPO / "cleanrl_pave" / f"{script}.py"), *flags], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=environment)


def logged_losses(run_dir: pathlib.Path) -> dict[str, dict[int, float]]:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: {event.step: event.value for event in accumulator.Scalars(tag)}
            for tag in accumulator.Tags()["scalars"] if tag.startswith("losses/")}


def same_training(script: str, env_id: str, learning_steps: int, device_flags: list[str], modes: dict,
                  workdir: pathlib.Path) -> dict:
    """Two runs of one seed in two modes; the largest differences of their logged losses, step by step."""
    learning_starts = 1000
    flags = ["--env-id", env_id, "--seed", "1", "--learning-starts", str(learning_starts), "--total-timesteps",
             str(learning_starts + learning_steps), "--log-freq", "2", "--eval-freq", "0", "--eval-episodes", "1",
             "--progress-interval", "0", *device_flags]
    losses, returns = {}, {}
    for mode, mode_flags in modes.items():
        result = run(script, [*flags, *mode_flags, "--run-name", mode], workdir / script)
        if result.returncode:
            return {"script": script, "ok": False, "detail": f"{mode}: " + (result.stderr or result.stdout)[-800:]}
        losses[mode] = logged_losses(workdir / script / "runs" / mode)
        returns[mode] = json.loads((workdir / script / "runs" / mode / "results.json").read_text())["eval"][
            "return_mean"]
    first, second = (losses[mode] for mode in modes)
    differences = {}
    for tag in sorted(first.keys() & second.keys()):
        steps = sorted(first[tag].keys() & second[tag].keys())
        absolute = [abs(first[tag][step] - second[tag][step]) for step in steps]
        relative = [a / max(abs(first[tag][step]), abs(second[tag][step]), 1e-12) for a, step in zip(absolute, steps)]
        differences[tag] = {"points": len(steps), "max_abs": max(absolute), "max_rel": max(relative),
                            "rel_at_first_log": relative[0], "rel_at_last_log": relative[-1]}
    missing = sorted(first.keys() ^ second.keys())
    return {"script": script, "ok": not missing and bool(differences), "modes": list(modes), "env_id": env_id,
            "learning_steps": learning_steps, "differences": differences, "final_return": returns,
            "detail": f"logged by one mode only: {missing}" if missing else ""}


def records(script: str, device_flags: list[str], workdir: pathlib.Path) -> dict:
    """A short --cudagraphs run: what it recorded, and any fallback warning."""
    flags = ["--env-id", "Pendulum-v1", "--seed", "1", "--learning-starts", "100", "--total-timesteps", "300",
             "--eval-freq", "0", "--eval-episodes", "1", "--hidden-sizes", "32", "32", "--progress-interval", "0",
             "--cudagraphs", "--run-name", "record", *device_flags]
    result = run(script, flags, workdir / f"record_{script}")
    recorded = RECORDED.findall(result.stdout)
    fallbacks = FALLBACK.findall(result.stderr)
    expected = 3 if script.startswith("td3") else 2  # TD3: critic update, actor update, acting; SAC: update, acting
    return {"script": script, "ok": result.returncode == 0 and len(recorded) == expected and not fallbacks,
            "recorded": recorded, "warnings": [line for line in result.stderr.splitlines() if "warning" in line],
            "detail": "" if result.returncode == 0 else (result.stderr or result.stdout)[-800:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--scripts", nargs="+", default=DEFAULT_SCRIPTS)
    parser.add_argument("--env-id", default="Hopper-v5")
    parser.add_argument("--learning-steps", type=int, default=1000)
    parser.add_argument("--stages", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--speed-steps", type=int, default=1000)
    parser.add_argument("--speed-repetitions", type=int, default=1)
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device_flags = [] if args.device == "cuda" else ["--no-cuda"]
    report = {"device": args.device, "env_id": args.env_id}
    path = out / "graph_check.json"
    with tempfile.TemporaryDirectory(prefix="graph_check_") as workdir:
        workdir = pathlib.Path(workdir)
        with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
            if 1 in args.stages:
                report["same_training"] = []
                for row in pool.map(lambda script: same_training(script, args.env_id, args.learning_steps,
                                                                 device_flags, MODES, workdir / "same"), args.scripts):
                    report["same_training"].append(row)  # kept as each finishes: a timed-out call keeps the rest
                    path.write_text(json.dumps(report, indent=1))
                    print(f"{row['script']}: {'ok' if row['ok'] else 'FAILED ' + row['detail']}")
                    for tag, difference in row.get("differences", {}).items():
                        print(f"  {tag:28s} max abs {difference['max_abs']:.3g}  max rel {difference['max_rel']:.3g}"
                              f"  rel first/last log {difference['rel_at_first_log']:.3g}/"
                              f"{difference['rel_at_last_log']:.3g}  ({difference['points']} logs)")
                    print(f"  final eval return {row.get('final_return')}", flush=True)
            if 2 in args.stages:
                scripts = sorted(p.stem for p in (REPO / "cleanrl_pave").glob("*_continuous.py"))
                report["records"] = []
                for row in pool.map(lambda script: records(script, device_flags, workdir), scripts):
                    report["records"].append(row)
                    path.write_text(json.dumps(report, indent=1))
                    print(f"{row['script']:32s} {'ok' if row['ok'] else 'FAILED'}  recorded {row['recorded']}  "
                          f"{row['warnings'] or ''} {row['detail']}", flush=True)
        if 3 in args.stages:
            variants = {f"{script} {mode}": (script, flags) for script in args.scripts
                        for mode, flags in (("default", []), ("cudagraphs", ["--cudagraphs"]))}
            (workdir / "speed").mkdir()
            samples, failures = measure(variants, args.env_id, 1000, args.speed_steps, args.speed_repetitions,
                                        device_flags, workdir / "speed")
            steady = medians(samples, "steady_sps")
            report["speed"] = {"samples": samples, "median_steady_sps": steady, "failures": failures}
            path.write_text(json.dumps(report, indent=1))
            for script in args.scripts:
                default, graphed = steady.get(f"{script} default"), steady.get(f"{script} cudagraphs")
                ratio = f"{graphed / default:.2f}x" if default and graphed else "-"
                print(f"{script:24s} default {default}  cudagraphs {graphed}  {ratio}", flush=True)
            for name, failure in failures.items():
                print(f"FAILED {name}: {failure}")
        if 4 in args.stages:
            report["profile"] = {script: profile(script, args.env_id, args.learning_steps, device_flags, workdir)
                                 for script in args.scripts}
            for script, top in report["profile"].items():
                print(f"{script} --cudagraphs, host time by function (own s, cumulative s, calls, function); the "
                      "top 25 by own time, then a step's parts:")
                for row in top:
                    print(f"  {row['own_s']:8.3f} {row['cumulative_s']:8.3f} {row['calls']:8d}  {row['function']}")
    path.write_text(json.dumps(report, indent=1))


def profile(script: str, env_id: str, learning_steps: int, device_flags: list[str], workdir: pathlib.Path) -> list:
    """The top 25 functions by own host time of a --cudagraphs run under cProfile."""
    cwd = workdir / f"profile_{script}"
    cwd.mkdir(parents=True, exist_ok=True)
    flags = ["--env-id", env_id, "--seed", "1", "--learning-starts", "1000", "--total-timesteps",
             str(1000 + learning_steps), "--eval-freq", "0", "--eval-episodes", "1", "--progress-interval", "0",
             "--cudagraphs", "--run-name", "profile", *device_flags]
    environment = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(cwd / "run.prof"),
                    str(REPO / "cleanrl_pave" / f"{script}.py"), *flags], cwd=cwd, env=environment, check=True,
                   capture_output=True, timeout=900)
    stats = pstats.Stats(str(cwd / "run.prof"))
    rows = sorted(((own, calls, cumulative, f"{pathlib.Path(file).name}:{line}({name})")
                   for (file, line, name), (_, calls, own, cumulative, _) in stats.stats.items()), reverse=True)
    # the parts of a step, by their cumulative time (compilation and start-up are in the first replays' and calls')
    parts = [row for row in rows if any(row[3].startswith(prefix) and row[3].endswith(suffix) for prefix, suffix in
                                        KEY_FUNCTIONS)]
    return [{"own_s": own, "calls": calls, "cumulative_s": cumulative, "function": function}
            for own, calls, cumulative, function in [*rows[:25], *parts]]


if __name__ == "__main__":
    main()
