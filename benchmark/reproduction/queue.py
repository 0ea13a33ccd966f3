"""The reproduction campaign's queue: the LunarLanderContinuous-v3 runs and the Pendulum reruns, two at a time.

    git worktree add --detach ../campaign 5af40e2                       # the campaign's one fixed commit
    python -m benchmark.reproduction.queue --checkout ../campaign --out /work/repro_ll --until 17:35 &

The queue keeps `--workers` runs going (two: one per core, one thread each), each through the checkout's
`benchmark/run.py` (the paper suites filtered to one run, paper settings; the runner resumes an interrupted run exactly
and skips a finished one), so the queue stopped at any moment continues where it was when started again. After each
run it copies the run's small results into this folder (`--data`): `results.json`, for TD3 the critic-geometry JSON of
the final model (computed by the checkout's code) and, for runs with `--geometry-freq`, the geometry logged during
training (`geometry_during_training.json`, from its TensorBoard events). A failed run stops the queue (the other run
finishes) with its log named: it is investigated, not rerun with other settings.

Which run next: of the runs whose estimated time left (`HOURS`, scaled by the progress its log shows, plus 10%) ends
before `--until`, the end of the working session, the first under way (it has a log), else the longest not started (the
first of `entries()` among equals); when none fits, the first run under way or else the first entry anyway, so both
cores stay busy. A session's end stops the runs in flight, and they resume only if the next session has the same machine
(checkpoints live on the machine, outside the repository), so runs that fit in the session go first, and the longest of
them first: a run of nearly a session's length finishes only when it starts at the session's start, while short runs
fill what is left. `--dry-run` prints the order and each run's runner command.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LL, PENDULUM = "LunarLanderContinuous-v3", "Pendulum-v1"
SEEDS = (178132, 410580, 922852)
DURING_TRAINING = {"geometry-freq": 100000}  # geometry at 1e5 ... 5e5 steps: the paper's during-training table
HOURS = {  # a whole run at one thread beside another run: benchmark/measurements/script_speed.py for LunarLander,
    # the published Pendulum runs' wall times for Pendulum
    (LL, "td3_continuous"): 2.3, (LL, "td3_caps_continuous"): 2.8, (LL, "td3_pave_continuous"): 7.0,
    (LL, "sac_continuous"): 0.9, (LL, "sac_caps_continuous"): 1.4, (LL, "sac_pave_continuous"): 2.3,
    (PENDULUM, "td3_continuous"): 0.45, (PENDULUM, "td3_grad_continuous"): 0.5, (PENDULUM, "td3_pave_continuous"): 1.5,
}
MARGIN = 1.1  # a run fits only with 10% to spare: the wall times measured on the AMD EPYC machine are mostly within
# about 10% of HOURS (TD3 CAPS ran at a pace of about 3 h against its 2.8), and a run that misses the end is lost
PROGRESS = re.compile(r"step (\d+)/(\d+) \(")


def entry(env: str, script: str, seed: int, data: str, out: str = "", flags: dict | None = None) -> dict:
    suite = "td3_main" if script.startswith("td3") else "sac_main"
    return {"env": env, "script": script, "seed": seed, "suite": suite, "flags": flags or {}, "data": data,
            "out": out}


def entries() -> list[dict]:
    """The campaign in priority order: tier 1 (TD3 and SAC base and PAVE) seed by seed, then tier 2 (CAPS), then the
    Pendulum reruns; TD3 PAVE on LunarLander (7 h, more than a 3-hour session) where no shorter run fits."""
    s1, s2, s3 = SEEDS
    tier1 = [entry(LL, script, seed, "lunarlander", flags=DURING_TRAINING if script.startswith("td3") else None)
             for seed in SEEDS for script in ("td3_continuous", "sac_continuous", "sac_pave_continuous")]
    tier2 = [entry(LL, script, seed, "lunarlander") for seed in SEEDS
             for script in ("sac_caps_continuous", "td3_caps_continuous")]
    # the reruns' results replaced the resumed runs' in pendulum/; their outputs have a folder of their own
    pendulum = [entry(PENDULUM, "td3_continuous", seed, "pendulum", out="pendulum_rerun") for seed in SEEDS]
    pendulum += [entry(PENDULUM, "td3_grad_continuous", seed, "pendulum", out="pendulum_rerun") for seed in (s2, s3)]
    pendulum += [entry(PENDULUM, "td3_pave_continuous", s2, "pendulum", out="pendulum_rerun")]
    td3_pave = [entry(LL, "td3_pave_continuous", seed, "lunarlander", flags=DURING_TRAINING) for seed in SEEDS]
    return tier1 + tier2 + pendulum + td3_pave


def run_name(item: dict) -> str:
    return f"{item['env']}__{item['script']}__{item['seed']}"


def run_out(item: dict, out: Path) -> Path:
    return (out / item["out"]) if item["out"] else out


def progress(item: dict, out: Path) -> float | None:
    """The fraction of its steps a run had reached by its log's last progress line; None for a run not started."""
    log = run_out(item, out) / "logs" / f"{run_name(item)}.log"
    if not log.exists():
        return None
    steps = PROGRESS.findall(log.read_text(errors="replace"))
    return int(steps[-1][0]) / int(steps[-1][1]) if steps else 0.0


def hours_left(item: dict, out: Path) -> float:
    return HOURS[item["env"], item["script"]] * (1.0 - (progress(item, out) or 0.0))


def pick(pending: list[dict], out: Path, hours_to_deadline: float | None) -> dict:
    """The next run to start: of those that end before the deadline (with `MARGIN`), the first under way, else the
    longest not started; when none fits (or there is no deadline), the first under way, else the first."""
    under_way = [item for item in pending if progress(item, out) is not None]
    if hours_to_deadline is not None:
        fitting = [item for item in under_way if MARGIN * hours_left(item, out) <= hours_to_deadline]
        if fitting:
            return fitting[0]
        fitting = [item for item in pending
                   if item not in under_way and MARGIN * hours_left(item, out) <= hours_to_deadline]
        if fitting:
            return max(fitting, key=lambda item: hours_left(item, out))  # max keeps the first of equals
    return (under_way + pending)[0]


def deadline(text: str | None, now: datetime) -> datetime | None:
    """--until HH:MM: the next such time of day (this machine's clock)."""
    if text is None:
        return None
    try:
        hour, minute = (int(part) for part in text.split(":"))
        moment = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    except ValueError:
        raise SystemExit(f"--until {text!r}: give a time of day as HH:MM, e.g. 17:35") from None
    return moment if moment > now else moment + timedelta(days=1)


def runner_command(item: dict, out: Path, checkout: Path) -> list[str]:
    command = [sys.executable, str(checkout / "benchmark" / "run.py"), "--suite", item["suite"], "--out", str(out),
               "--workers", "1", "--filter", f"env={item['env']}", "--filter", f"script={item['script']}",
               "--filter", f"seed={item['seed']}"]
    for name, value in item["flags"].items():
        command += ["--set", f"{name}={value}"]
    return command


def export(item: dict, run_dir: Path, data_dir: Path, checkout: Path) -> None:
    """Copy a finished run's small results into the repository's data folder."""
    target = data_dir / item["data"] / run_name(item)
    target.mkdir(parents=True, exist_ok=True)
    if item["script"].startswith("td3"):
        subprocess.run([sys.executable, "-m", "cleanrl_pave.critic_geometry", "--model",
                        str(run_dir / f"{item['script']}.cleanrl_model"), "--output", str(target / "geometry.json")],
                       check=True, cwd=checkout, stdout=subprocess.DEVNULL)
    if "geometry-freq" in item["flags"]:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        events.Reload()
        during = {tag.split("/", 1)[1]: {str(event.step): event.value for event in events.Scalars(tag)}
                  for tag in events.Tags()["scalars"] if tag.startswith("geometry/")}
        (target / "geometry_during_training.json").write_text(json.dumps(during, indent=2) + "\n")
    shutil.copyfile(run_dir / "results.json", target / "results.json")  # last: its presence means exported


def say(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the runs' output folder, outside the repository")
    parser.add_argument("--checkout", type=Path, default=REPO,
                        help="the checkout (a worktree at the campaign's commit) whose runner and code run")
    parser.add_argument("--data", type=Path, default=HERE, help="where the small results are copied")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--until", help="HH:MM, the working session's end: prefer runs that finish before it")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    if not (checkout / "benchmark" / "run.py").exists():
        raise SystemExit(f"--checkout {args.checkout}: no benchmark/run.py there")
    end = deadline(args.until, datetime.now())
    pending = [item for item in entries() if not (args.data / item["data"] / run_name(item) / "results.json").exists()]
    if args.dry_run:
        for item in pending:
            print(f"{HOURS[item['env'], item['script']]:4.1f} h  " + " ".join(runner_command(item, run_out(item, args.out), checkout)))
        return 0
    running: dict[str, tuple[dict, subprocess.Popen]] = {}
    failed = 0
    while running or (pending and not failed):
        while pending and not failed and len(running) < args.workers:
            hours = None if end is None else (end - datetime.now()).total_seconds() / 3600
            item = pick(pending, args.out, hours)
            pending.remove(item)
            run_dir = run_out(item, args.out) / "runs" / run_name(item)
            if (run_dir / "results.json").exists():
                export(item, run_dir, args.data, checkout)
                say(f"exported {run_name(item)}")
                continue
            say(f"start {run_name(item)} (about {hours_left(item, args.out):.1f} h left)")
            process = subprocess.Popen(runner_command(item, run_out(item, args.out), checkout), cwd=checkout)
            running[run_name(item)] = (item, process)
        time.sleep(5)
        for name, (item, process) in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            del running[name]
            if code != 0:
                failed = code
                say(f"{name} ended with exit {code} (log: {run_out(item, args.out) / 'logs' / (name + '.log')}); "
                    "no further runs start")
                continue
            export(item, run_out(item, args.out) / "runs" / name, args.data, checkout)
            say(f"exported {name}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
