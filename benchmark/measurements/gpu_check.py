"""Every training script checked on the GPU, and the speed of the bases and PAVE measured there, in one call.

1. Every script runs past learning_starts on Pendulum-v1, in a pool of worker processes, under the UpdatePathChecker
   of benchmark/measurements/update_path_check.py with the GPU as the model's device: it must finish and write
   results.json, every tensor its update block makes must be on the GPU (none elsewhere), nothing may be read back to
   the host outside logging, and it must have allocated GPU memory. Each run also writes a checkpoint, evaluates
   twice and logs critic geometry.
2. Paths only a GPU run takes: resuming from a GPU checkpoint (the bases and PAVE: generator state, fused Adam state,
   replay buffer), the PAVE non-finite guard (fused Adam's found_inf on the GPU), and whether the same seed gives the
   same evaluation twice on the GPU (reported; only the CPU promises it). Beside stage 1, in the same pool, every
   compiled speed variant runs once briefly on Hopper-v5 so that stage 3 finds its kernels compiled (torch's inductor
   and Triton caches); those compile times are reported (the first variants' with cold caches).
3. Learning-phase steps per second on Hopper-v5 of the TD3 and SAC bases and PAVE with
   benchmark/measurements/script_speed.py, one run at a time: eager, with only the PAVE loss compiled (the PAVE scripts' default), with each whole update replayed as CUDA
   graphs (--cudagraphs), and, if --modes asks, compiled without graphs (--compile). The steady rate between
   logged steps leaves compilation out. The last logged TD loss of each run is reported too: modes that run the same
   kernels give the same number, and compiling changes only the last digits.

It prints the tables and writes gpu_check.json and gpu_check.md (rewritten after each stage) to --out.

    python -m benchmark.measurements.gpu_check --out $OUT    # on the GPU machine, through gpu_check.sh beside this file
    python -m benchmark.measurements.gpu_check --device cpu --steps 300 --learning-starts 200 --hidden-sizes 32 32 \\
        --speed-warmup 200 --speed-steps 300 --workers 2 --out /tmp/gpu_check   # a dry run on a CPU
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import gc
import importlib
import json
import multiprocessing
import os
import pathlib
import platform
import tempfile
import time
import traceback

import torch

from benchmark.measurements import script_speed
from benchmark.measurements.update_path_check import run_checked, script_args

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = sorted(path.stem for path in (REPO / "cleanrl_pave").glob("*_continuous.py"))
SPEED_SCRIPTS = ("td3_continuous", "td3_pave_continuous", "sac_continuous", "sac_pave_continuous")
RESUMED_SCRIPTS = SPEED_SCRIPTS
GUARDED_SCRIPTS = ("td3_pave_continuous", "sac_pave_continuous")
MODES = ("eager", "pave-compile", "cudagraphs", "compile")
# one repetition of these 10 variants should fit one ~9-minute call on an H200 machine (an estimate from two partial
# calls: stages 1 and 2 took about 130 s, each timed run about 25-30 s)
DEFAULT_MODES = ("eager", "pave-compile", "cudagraphs")


def has_field(script: str, name: str) -> bool:
    module = importlib.import_module(f"cleanrl_pave.{script}")
    return name in {field.name for field in dataclasses.fields(module.Args)}


def mode_flags(script: str, mode: str) -> list[str] | None:
    """The flags of a speed mode for `script`, or None if the mode does not apply to it. Whether the script has
    --pave-compile and --cudagraphs is read from its Args, so this works for older checkouts too."""
    pave_flag = has_field(script, "pave_compile")
    if mode == "eager":
        return ["--no-compile", *(["--no-pave-compile"] if pave_flag else [])]
    if mode == "compile":
        return ["--compile", *(["--pave-compile"] if pave_flag else [])]
    if mode == "cudagraphs":
        return ["--cudagraphs", *(["--pave-compile"] if pave_flag else [])] if has_field(script, "cudagraphs") else None
    return ["--no-compile", "--pave-compile"] if pave_flag else None


def free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_script(script: str, settings: dict, device: str) -> dict:
    """Stage 1 for one script (in the current directory): run it under the checker and judge the outcome."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start, record = time.monotonic(), {"script": script}
    try:
        results, checker = run_checked(script, {**settings, "run_name": script}, device)
        record.update(eval_return=results["eval"]["return_mean"], sps=results["sps"])
    except BaseException as error:  # a script's SystemExit too: the other scripts still run
        checker = getattr(error, "device_checker", None)
        record["error"] = f"{type(error).__name__}: {error}".strip().splitlines()[-1][:300]
        record["traceback"] = traceback.format_exc()[-3000:]
    record["seconds"] = time.monotonic() - start
    record["results_json"] = os.path.exists(f"runs/{script}/results.json")
    record["findings"] = checker.report() if checker else []
    record["tensor_devices"] = dict(checker.tensor_devices) if checker else {}
    record["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    problems = [record["error"]] if "error" in record else []
    problems += record["findings"]
    if not record["results_json"]:
        problems.append("no results.json")
    elsewhere = {kind: count for kind, count in record["tensor_devices"].items() if kind != device}
    if not record["tensor_devices"].get(device) or elsewhere:
        problems.append(f"update-path tensors by device: {record['tensor_devices']}")
    if device == "cuda" and not record["gpu_peak_mib"]:
        problems.append("no GPU memory allocated")
    record["problems"], record["ok"] = problems, not problems
    free_device_memory()
    return record


def resume_check(script: str, settings: dict) -> dict:
    """Resume the stage-1 run of `script` from its mid-run checkpoint (its results.json removed first)."""
    record = {"script": script, "check": "resumes from its checkpoint"}
    try:
        os.remove(f"runs/{script}/results.json")
        module = importlib.import_module(f"cleanrl_pave.{script}")
        results = module.main(script_args(module, {**settings, "run_name": script, "resume": True}))
        record["ok"] = results["global_step"] == settings["total_timesteps"]
        record["detail"] = f"reached step {results['global_step']}"
    except BaseException as error:
        record.update(ok=False, detail=f"{type(error).__name__}: {error}"[:300])
    free_device_memory()
    return record


def guard_check(script: str, settings: dict) -> dict:
    """lambda_Curv = 3e38 overflows the critic loss: the run must stop with the guard's message at the logging
    interval and leave a checkpoint with a finite critic (the non-finite updates skipped by fused Adam)."""
    record, name = {"script": script, "check": "non-finite guard stops the run"}, f"{script}_guard"
    try:
        module = importlib.import_module(f"cleanrl_pave.{script}")
        module.main(script_args(module, {**settings, "run_name": name, "lam_curv": 3e38}))
        record.update(ok=False, detail="the run did not stop")
    except SystemExit as error:
        checkpoint_path = f"runs/{name}/checkpoint.pt"
        finite = os.path.exists(checkpoint_path) and all(
            torch.isfinite(value).all() for value in torch.load(checkpoint_path, weights_only=False)["qf"].values())
        record.update(ok="non-finite" in str(error) and finite,
                      detail=f"{str(error)[:120]}...; checkpoint with a finite critic: {finite}")
    except BaseException as error:
        record.update(ok=False, detail=f"{type(error).__name__}: {error}"[:300])
    free_device_memory()
    return record


def repeat_check(script: str, settings: dict) -> dict:
    """Run the stage-1 settings of `script` again and compare the evaluation (informational on a GPU)."""
    record = {"script": script, "check": "same seed, same evaluation (informational)"}
    try:
        first = json.loads(pathlib.Path(f"runs/{script}/results.json").read_text())
        module = importlib.import_module(f"cleanrl_pave.{script}")
        again = module.main(script_args(module, {**settings, "run_name": f"{script}_again"}))
        same = again["eval_history"] == first["eval_history"]
        record.update(ok=True, detail=f"identical: {same} (returns {first['eval']['episode_returns']} and "
                                      f"{again['eval']['episode_returns']})")
    except BaseException as error:
        record.update(ok=False, detail=f"{type(error).__name__}: {error}"[:300])
    free_device_memory()
    return record


def device_paths(script: str, settings: dict, guard: bool) -> list[dict]:
    """Stage 2 for one script: the guard check, or the repeat check and then the resume check (which removes the
    stage-1 results.json that the repeat check compares with)."""
    if guard:
        return [guard_check(script, {**settings, "checkpoint_freq": 0})]
    return [repeat_check(script, settings), resume_check(script, settings)]


def warm_compile(script: str, flags: list[str], env_id: str, extra: list[str]) -> dict:
    """A short run of a compiled speed variant, with the speed runs' shapes, that fills torch's compile caches."""
    record = {"script": script, "flags": flags}
    with tempfile.TemporaryDirectory(prefix="warm_compile_") as workdir:
        try:
            output = script_speed.run(script, ["--env-id", env_id, "--learning-starts", "100",
                                               "--total-timesteps", "200", "--eval-episodes", "1", "--run-name", "warm",
                                               *flags, *extra],
                                      pathlib.Path(workdir))
            record["compile_s"] = sum(float(seconds) for _, seconds in script_speed.COMPILE_LINE.findall(output))
        except BaseException as error:
            record["error"] = f"{type(error).__name__}: {error}"[:300]
    return record


def in_workdir(workdir: str, task, *args):
    """A pool worker's job: `task(*args)` with `workdir` as the current directory (the runs/ of every stage)."""
    os.chdir(workdir)
    return task(*args)


def failed_task(task: tuple, error: BaseException):
    """The result of a task whose worker died (or whose function raised after all): a failed row of its kind."""
    function, script, *_ = task
    reason = f"{type(error).__name__}: {error}"[:300]
    if function is check_script:
        return {"script": script, "ok": False, "problems": [reason], "error": reason, "seconds": float("nan"),
                "results_json": False, "findings": [], "tensor_devices": {}, "gpu_peak_mib": None}
    if function is warm_compile:
        return {"script": script, "flags": task[2], "error": reason}
    return [{"script": script, "check": "stage 2", "ok": False, "detail": reason}]


def run_pool(tasks: list[tuple], workers: int, workdir: str, report_done) -> list:
    """Run (function, *args) tasks in `workers` fresh processes (spawned: each initialises CUDA itself) inside
    `workdir`; returns their results in task order, calling report_done(result) as each one finishes. A task that
    fails outside its own error handling (a crashed worker) gives a failed row, so the report is still written."""
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(in_workdir, workdir, *task): index for index, task in enumerate(tasks)}
        results = [None] * len(tasks)
        for future in concurrent.futures.as_completed(futures):
            index = futures[future]
            try:
                results[index] = future.result()
            except BaseException as error:
                results[index] = failed_task(tasks[index], error)
            report_done(results[index])
        return results


def print_stage_one(row: dict) -> None:
    """One line per finished stage-1 check or compile warm-up, as it finishes."""
    if "flags" in row:
        outcome = row.get("error") or f"compiled in {row['compile_s']:.1f} s"
        print(f"[compile] {row['script']:32s} {' '.join(row['flags'])}: {outcome}", flush=True)
    else:
        print(f"[stage 1] {row['script']:32s} {'ok' if row['ok'] else 'FAILED'} {row['seconds']:6.1f} s "
              f"{row['tensor_devices']} {'; '.join(row['problems'])}", flush=True)


def print_stage_two(rows: list[dict]) -> None:
    """The lines of one finished stage-2 task."""
    for row in rows:
        print(f"[stage 2] {row['script']:32s} {row['check']}: {'ok' if row['ok'] else 'FAILED'} "
              f"({row['detail']})", flush=True)


def environment(device: str) -> dict:
    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def label(script: str, mode: str) -> str:
    return f"{script} [{mode}]"


def speed_rows(samples: dict, failures: dict, variants: dict[tuple[str, str], list[str]]) -> list[dict]:
    """One row per (script, mode): median rates, speed-up against the script's eager mode, and step time against the
    base in the same mode (the base's eager mode for a mode the base lacks)."""
    steady, whole = script_speed.medians(samples, "steady_sps"), script_speed.medians(samples, "sps")
    rows = []
    for script, mode in variants:
        name, base = label(script, mode), script.replace("_pave", "")
        base_name = label(base, mode if (base, mode) in variants else "eager")
        last_losses = [sample["qf1_loss"] for sample in samples[name] if "qf1_loss" in sample]
        notes = {note for sample in samples[name] for note in sample.get("compile_notes", [])}
        rows.append({"script": script, "mode": mode, "flags": variants[script, mode], "steady_sps": steady[name],
                     "sps": whole[name], "samples": len(samples[name]),
                     "error": "; ".join(filter(None, [failures.get(name), *sorted(notes)]))[:400] or None,
                     "last_qf1_loss": last_losses[0] if last_losses else float("nan"),
                     "vs_eager": steady[name] / steady.get(label(script, "eager"), float("nan")),
                     "step_time_vs_base": steady.get(base_name, float("nan")) / steady[name]
                     if script != base else None})
    return rows


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# GPU check: {env['device']}, torch {env['torch']} (CUDA {env['cuda']}), Python {env['python']}, "
             f"{env['date']}", "", "## Every script on the device", "",
             "| script | ok | s | update tensors by device | peak MiB | eval return | problems |",
             "|---|---|--:|---|--:|--:|---|"]
    for row in report.get("scripts", []):
        peak = f"{row['gpu_peak_mib']:.0f}" if row["gpu_peak_mib"] is not None else "-"
        lines.append(f"| {row['script']} | {'yes' if row['ok'] else 'NO'} | {row['seconds']:.1f} | "
                     f"{row['tensor_devices']} | {peak} | {row.get('eval_return', float('nan')):.1f} | "
                     f"{'; '.join(row['problems'])[:300]} |")
    if report.get("compile_warmups"):
        lines += ["", "## Compilation of the speed variants (beside stage 1; the first ones with cold caches)", "",
                  "| script | flags | compile s | error |", "|---|---|--:|---|"]
        lines += [f"| {row['script']} | {' '.join(row['flags'])} | {row.get('compile_s', float('nan')):.1f} | "
                  f"{row.get('error', '')} |" for row in report["compile_warmups"]]
    if report.get("device_paths"):
        lines += ["", "## Device paths", "", "| script | check | ok | detail |", "|---|---|---|---|"]
        lines += [f"| {row['script']} | {row['check']} | {'yes' if row['ok'] else 'NO'} | {row['detail']} |"
                  for row in report["device_paths"]]
    if report.get("speed"):
        settings = report["speed_settings"]
        lines += ["", f"## Learning-phase speed, {settings['env_id']}: median of {settings['repetitions']} x "
                      f"{settings['steps']} learning steps after a {settings['warmup']}-step warm-up", "",
                  "| script | mode | steady SPS | run SPS | runs | vs eager | step time vs base | last qf1_loss "
                  "| error |",
                  "|---|---|--:|--:|--:|--:|--:|--:|---|"]
        for row in report["speed"]:
            ratio = f"{row['step_time_vs_base']:.2f}x" if row["step_time_vs_base"] is not None else "-"
            lines.append(f"| {row['script']} | {row['mode']} | {row['steady_sps']:.1f} | {row['sps']:.1f} | "
                         f"{row['samples']} | {row['vs_eager']:.2f}x | {ratio} | {row['last_qf1_loss']:.6g} | "
                         f"{row['error'] or ''} |")
        lines += ["", "steady SPS: the timed steps after 100 untimed ones (no compilation, no final evaluation); "
                      "run SPS: the whole resumed run as results.json reports it; last qf1_loss: the TD loss logged "
                      "at the last timed step of the first repetition (modes that run the same kernels give the same "
                      "number; compiling changes the rounding, and so the last digits)."]
    return "\n".join(lines) + "\n"


def write(report: dict, out: pathlib.Path) -> None:
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a dry run without a GPU")
    parser.add_argument("--out", default=".", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--scripts", nargs="+", default=SCRIPTS, help="stage 1: these scripts (default: all)")
    parser.add_argument("--steps", type=int, default=1500, help="stage 1: total env steps per script")
    parser.add_argument("--learning-starts", type=int, default=500, help="stage 1: warm-up steps before learning")
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=None, help="every stage (default: the paper's)")
    parser.add_argument("--speed-env-id", default="Hopper-v5")
    parser.add_argument("--speed-warmup", type=int, default=1000)
    parser.add_argument("--speed-steps", type=int, default=1000)
    parser.add_argument("--repetitions", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(DEFAULT_MODES),
                        help="stage 3: these modes, in this order (compile: the losses compiled without CUDA graphs)")
    parser.add_argument("--workers", type=int, default=8, help="stages 1 and 2: processes at a time")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="no speed run starts after this many seconds from the start")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device here (use --device cpu for a dry run)")
    unknown = sorted(set(args.scripts) - set(SCRIPTS))
    if unknown:
        raise SystemExit(f"error: no such scripts: {unknown}")
    if args.steps <= args.learning_starts or min(args.learning_starts, args.speed_warmup) <= 0:
        raise SystemExit("error: --steps must exceed --learning-starts, and both warm-ups must be positive")
    started = time.monotonic()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"environment": environment(args.device), "arguments": vars(args)}
    print(json.dumps(report["environment"]), flush=True)
    half = args.steps // 2
    settings = dict(env_id="Pendulum-v1", total_timesteps=args.steps, learning_starts=args.learning_starts,
                    eval_freq=half, eval_episodes=1, log_freq=100, checkpoint_freq=half, geometry_freq=args.steps,
                    seed=1, cuda=args.device == "cuda", compile=False, pave_compile=False)
    if args.hidden_sizes:
        settings["hidden_sizes"] = tuple(args.hidden_sizes)

    variants = {(script, mode): flags for mode in args.modes for script in SPEED_SCRIPTS
                if (flags := mode_flags(script, mode)) is not None}
    extra = ["--no-cuda"] if args.device == "cpu" else []
    extra += ["--hidden-sizes", *map(str, args.hidden_sizes)] if args.hidden_sizes else []
    warmups = [(warm_compile, script, flags, args.speed_env_id, extra)
               for (script, mode), flags in variants.items() if mode != "eager"]
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as workdir:
        done = run_pool([(check_script, script, settings, args.device) for script in args.scripts] + warmups,
                        args.workers, workdir, print_stage_one)
        report["scripts"], report["compile_warmups"] = done[:len(args.scripts)], done[len(args.scripts):]
        write(report, out)

        passed = {row["script"] for row in report["scripts"] if row["ok"]}
        tasks = [(device_paths, script, settings, False) for script in RESUMED_SCRIPTS if script in passed]
        tasks += [(device_paths, script, settings, True) for script in GUARDED_SCRIPTS if script in args.scripts]
        report["device_paths"] = [row for rows in run_pool(tasks, args.workers, workdir, print_stage_two)
                                  for row in rows]
        write(report, out)

    report["speed_settings"] = {"env_id": args.speed_env_id, "warmup": args.speed_warmup, "steps": args.speed_steps,
                                "repetitions": args.repetitions, "flags": extra}
    print(f"[stage 3] {len(variants)} speed variants on {args.speed_env_id}, "
          f"{time.monotonic() - started:.0f} s into the check", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_speed_") as workdir:
        samples, failures = script_speed.measure({label(*key): (key[0], flags) for key, flags in variants.items()},
                                          args.speed_env_id, args.speed_warmup, args.speed_steps, args.repetitions,
                                          extra, pathlib.Path(workdir), started + args.budget_s)
    report["speed_samples"], report["speed"] = samples, speed_rows(samples, failures, variants)
    write(report, out)
    print("\n" + markdown(report), flush=True)
    failed = [row["script"] for row in report["scripts"] if not row["ok"]] + \
        [f"{row['script']}: {row['check']}" for row in report["device_paths"] if not row["ok"]]
    if failed:
        raise SystemExit(f"error: failed checks: {failed}")


if __name__ == "__main__":
    main()
