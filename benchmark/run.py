"""Run a benchmark suite: every (env x script x cell x seed) run of it, locally, on Ray, or as a SLURM array.

    python benchmark/run.py --suite quick --workers 2
    python benchmark/run.py --suite td3_main --dry-run
    python benchmark/run.py --suite td3_main --backend ray --ray-address auto --track
    python benchmark/run.py --suite td3_main --gpus 0,1 --runs-per-gpu 4    # 8 runs at once, 4 on each GPU
    python benchmark/run.py --suite ablation --backend slurm --out /scratch/pave

Runs execute with cwd = --out, so run NAME writes ``<out>/runs/NAME/`` (results.json, checkpoint.pt) and
logs to ``<out>/logs/NAME.log``. Re-running skips runs with a results.json, resumes the others exactly from their
checkpoints (every run gets --resume, --checkpoint-freq and --checkpoint-minutes; SIGINT/SIGTERM make a run save
one), and retries failures up to --retries times.
``<out>/state/<suite>.json`` records every run's status, attempts, exit code and log; a failed run makes the
runner exit 1 and is listed with its log at the end.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
import time
from collections import deque
from datetime import datetime
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmark` importable without installing anything
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.backends import BackendError, Ended, GpuSlots, Job, LocalBackend, RayBackend
from benchmark.commands import LaunchSettings
from benchmark.suite_loader import SCRIPTS_DIR, Run, SuiteError, check_flags, load_suite, parse_overrides, select
from benchmark.slurm import SlurmOptions, write_job
from cleanrl_pave.monitoring import format_duration


def timestamp() -> str:
    return datetime.now().isoformat(timespec="seconds")


class StateFile:
    """``<out>/state/<suite>.json``: the status of every run this suite has tried, rewritten atomically. Several
    runners may share one output folder (say, two disjoint --filter slices of a suite at once): each update re-reads
    the file under a lock and changes only its own run's entry, so no runner loses another's records."""

    def __init__(self, path: Path):
        self.path = path
        self.runs: dict[str, dict] = self._read()
        self.locking = True

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text())["runs"]
        except (ValueError, KeyError, TypeError) as error:  # the state only reports: results.json decides what to skip
            kept = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
            os.replace(self.path, kept)
            print(f"warning: {self.path} is unreadable ({type(error).__name__}: {error}); kept as {kept.name}, "
                  f"starting a new one (finished runs are still skipped by their results.json)",
                  file=sys.stderr, flush=True)
            return {}

    def update(self, run: Run, **fields) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            if self.locking:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                except OSError as error:  # a file system without flock: go on, as a lone runner needs no lock
                    print(f"warning: cannot lock {lock.name} ({error}); runners must not share {self.path.parent}",
                          file=sys.stderr, flush=True)
                    self.locking = False
            self.runs = self._read()
            entry = self.runs.setdefault(run.name, {})
            entry.update(env_id=run.env_id, script=run.script, seed=run.seed, tag=run.tag, flags=run.flags, **fields)
            entry["updated"] = timestamp()
            temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps({"runs": self.runs}, indent=1))
            os.replace(temporary, self.path)


class Runner:
    """Schedules a suite's runs on a backend, with retries, progress lines, state and a summary."""

    def __init__(self, runs: list[Run], settings: LaunchSettings, make_backend, workers: int | None, retries: int):
        self.settings = settings
        self.make_backend = make_backend  # called only when something is left to run (starting Ray takes a while)
        self.workers = workers
        self.retries = retries
        self.state = StateFile(settings.out / "state" / f"{settings.suite}.json")
        self.number = {run.name: index + 1 for index, run in enumerate(runs)}
        self.total = len(runs)
        self.runs = runs
        self.done: list[str] = []
        self.skipped: list[str] = []
        self.failed: dict[str, str] = {}  # run name -> why it failed and where its log is
        self.interrupted: list[str] = []
        self.stop_signal: int | None = None
        self.backend = None
        self.pending: deque[Run] = deque()
        self.running: dict[str, tuple[Run, float]] = {}  # run name -> (run, start time)
        self.finished_runs: dict[str, list[tuple[float, float]]] = {}  # script -> (wall s, s per step) per run
        self.resumed: set[str] = set()  # runs whose current attempt continues a checkpoint

    def say(self, event: str, run: Run, detail: str = "") -> None:
        number = f"{self.number[run.name]}/{self.total}"
        width = 2 * len(str(self.total)) + 1
        print(f"[{datetime.now():%H:%M:%S}] {event:<11} {number:>{width}} {run.name}{'  ' + detail if detail else ''}",
              flush=True)

    def execute(self) -> int:
        """Run everything that has no results yet; returns the exit code."""
        pending = deque()
        for run in self.runs:
            if self.settings.results_path(run).exists():
                self.skipped.append(run.name)
                self.state.update(run, status="done", log=str(self.settings.log_path(run)))
                self.record_speed(run)
            else:
                pending.append(run)
        # Longest runs first: with a worker pool, that shortens the whole suite.
        pending = self.pending = deque(sorted(pending, key=lambda run: -(run.total_timesteps or 0)))
        running = self.running
        attempts_left = {run.name: 1 + self.retries for run in pending}
        print(f"suite {self.settings.suite}: {self.total} runs, {len(self.skipped)} already done, "
              f"{len(pending)} to run; output in {self.settings.out}{self.eta_text()}", flush=True)
        if not pending:
            return self.summary()

        self.backend = self.make_backend()
        previous_handlers = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while (pending or running) and self.stop_signal is None:
                while pending and (self.workers is None or len(running) < self.workers):
                    run = pending.popleft()
                    attempts_left[run.name] -= 1
                    self.start(run, running)
                for ended in self.backend.poll(timeout=0.5):
                    run, started = running.pop(ended.name)
                    if self.finish(run, ended, time.monotonic() - started, attempts_left[run.name]):
                        pending.appendleft(run)
            if self.stop_signal is not None:
                self.backend.stop()
                for run, _ in running.values():
                    self.interrupted.append(run.name)
                    self.state.update(run, status="interrupted")
                    self.say("interrupted", run)
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            self.backend.close()
        return self.summary()

    def request_stop(self, signum, frame) -> None:
        """SIGINT/SIGTERM: stop starting runs; the loop then kills the running ones and reports."""
        if self.stop_signal is None:
            print(f"\n{signal.Signals(signum).name}: stopping the running runs; each saves a checkpoint (re-run the "
                  "suite to resume them)", flush=True)
        self.stop_signal = signum

    def start(self, run: Run, running: dict) -> None:
        attempt = self.state.runs.get(run.name, {}).get("attempts", 0) + 1
        resuming = self.settings.checkpoint_path(run).exists()
        if resuming:
            self.resumed.add(run.name)
        detail = f"attempt {attempt}" + (", resuming from checkpoint" if resuming else "")
        job = Job(run.name, self.settings.script_args(run), str(self.settings.out), self.settings.environment(),
                  str(self.settings.log_path(run)),
                  f"\n===== benchmark runner, suite {self.settings.suite}: {run.name}, {detail}, {timestamp()}\n")
        self.backend.submit(job)
        running[run.name] = (run, time.monotonic())
        self.state.update(run, status="running", attempts=attempt, log=job.log_path, started=timestamp())
        self.say("start", run, detail)

    def finish(self, run: Run, ended: Ended, duration: float, attempts_left: int) -> bool:
        """Record a run that ended; returns whether to retry it."""
        log = str(self.settings.log_path(run))
        if ended.returncode == 0 and self.settings.results_path(run).exists():
            self.done.append(run.name)
            self.state.update(run, status="done", returncode=0, duration_s=round(duration, 1))
            self.record_speed(run, None if run.name in self.resumed else duration)
            self.say("done", run, f"in {duration:.0f}s{self.eta_text()}")
            return False
        if self.stop_signal is not None:  # a Ctrl-C reaches the runs too: they were interrupted, not failed
            self.interrupted.append(run.name)
            self.state.update(run, status="interrupted", returncode=ended.returncode)
            self.say("interrupted", run)
            return False
        why = (ended.error or f"exit {ended.returncode}") if ended.returncode != 0 else "exit 0 but no results.json"
        retry = attempts_left > 0
        self.state.update(run, status="failed", returncode=ended.returncode, error=why, duration_s=round(duration, 1))
        self.say("failed", run, f"{why}, log {log}" + (" (retrying)" if retry else "") + self.eta_text())
        if not retry:
            self.failed[run.name] = f"{why}, log {log}"
        return retry

    def record_speed(self, run: Run, duration: float | None = None) -> None:
        """Remember a finished run's wall time and seconds per env step for the suite ETA: `duration`, the whole
        process as the runner timed it, for a run done in one attempt here, else its results.json's training time."""
        try:
            results = json.loads(self.settings.results_path(run).read_text())
            wall_time = float(results["wall_time_s"]) if duration is None else duration
            speed = (wall_time, wall_time / int(results["global_step"]))
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            return
        self.finished_runs.setdefault(run.script, []).append(speed)

    def suite_eta(self) -> float | None:
        """Seconds until the runs left are done: each run left takes its steps times the mean seconds per step of
        the finished runs of its own script (their mean wall time for a run without a step count), less what a
        running run has done, shared by the workers. None until every script left has a finished run: scripts'
        speeds differ tenfold (a PAVE run against a SAC base run), so another script's would mislead."""
        left_scripts = {run.script for run in self.pending} | {run.script for run, _ in self.running.values()}
        if not self.finished_runs or not left_scripts <= self.finished_runs.keys():
            return None

        def expected_seconds(run: Run) -> float:
            speeds = self.finished_runs[run.script]
            if run.total_timesteps is None:
                return sum(wall for wall, _ in speeds) / len(speeds)
            return run.total_timesteps * sum(per_step for _, per_step in speeds) / len(speeds)

        now = time.monotonic()
        left = [expected_seconds(run) for run in self.pending]
        left += [max(expected_seconds(run) - (now - started), 0.0) for run, started in self.running.values()]
        workers = self.workers or max(len(self.running), 1)
        return max(sum(left) / workers, max(left, default=0.0))

    def eta_text(self) -> str:
        eta = self.suite_eta() if self.pending or self.running else None
        return "" if eta is None else f"; suite ETA {format_duration(eta)}"

    def resumed_runs(self) -> dict[str, list[int]]:
        """{run name: start step of each of its processes} of the finished runs trained by more than one process."""
        resumed = {}
        for run in self.runs:
            try:
                segments = json.loads(self.settings.results_path(run).read_text())["segments"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if len(segments) > 1:
                resumed[run.name] = [segment["start_step"] for segment in segments]
        return resumed

    def summary(self) -> int:
        print(f"\nsuite {self.settings.suite}: {self.total} runs: {len(self.done)} done, {len(self.skipped)} skipped "
              f"(results existed), {len(self.failed)} failed"
              + (f", {len(self.interrupted)} interrupted" if self.interrupted else ""))
        if self.failed:
            print("failed runs (see their logs):")
            for name, why in self.failed.items():
                print(f"  {name}: {why}")
        resumed = self.resumed_runs()
        if resumed:
            print("finished runs that were resumed (each exactly; the steps their processes started from):")
            for name, steps in resumed.items():
                print(f"  {name}: {', '.join(map(str, steps))}")
        if self.interrupted:
            print("interrupted runs resume from their checkpoints when the suite is run again:")
            for name in self.interrupted:
                print(f"  {name}")
        print(f"state: {self.state.path}", flush=True)
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        return 1 if self.failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", required=True, help="suite name in benchmark/suites/, or a path to a suite .json")
    parser.add_argument("--out", type=Path, default=Path("."), help="output directory (runs/, logs/, state/)")
    parser.add_argument("--backend", choices=("local", "ray", "slurm"), default="local")
    parser.add_argument("--workers", type=int, default=None,
                        help="runs at a time (default: local, the number of CPUs; ray, as many as the cluster fits)")
    parser.add_argument("--retries", type=int, default=0, help="extra attempts for a failed run, per invocation")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (--threads and OMP_NUM_THREADS)")
    parser.add_argument("--checkpoint-fraction", type=float, default=None,
                        help="checkpoint every this fraction of a run's steps (default: the suite's, else 0.1)")
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0,
                        help="also checkpoint every this many minutes of a run's wall time (0: never; default 10)")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=PATTERN[,PATTERN]",
                        help="keep runs whose env|script|seed|tag|name matches a glob pattern; repeatable (AND)")
    parser.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE", dest="overrides",
                        help="override or add a script flag in every run, e.g. --set total-timesteps=3000 "
                             "--set 'hidden-sizes=32 32'; does not change run names, so use a fresh --out")
    parser.add_argument("--dry-run", action="store_true", help="print every run's command and exit")
    parser.add_argument("--scripts-dir", type=Path, default=SCRIPTS_DIR, help="where <script>.py files live")
    tracking = parser.add_argument_group("Weights & Biases")
    tracking.add_argument("--track", action="store_true",
                          help="runs log to W&B, grouped by cell (the run name without its seed), tagged with the suite and cell tags")
    tracking.add_argument("--wandb-project-name", default="cleanrl_pave")
    tracking.add_argument("--wandb-entity", default=None)
    gpu_options = parser.add_argument_group("GPUs (benchmark/README.md, \"Behaviour\")")
    gpu_options.add_argument("--gpus", default=None, metavar="IDS",
                             help="comma-separated GPU ids, e.g. 0,1: each run gets one as its only visible GPU "
                                  "(CUDA_VISIBLE_DEVICES); default: runs see whatever GPUs the machine has")
    gpu_options.add_argument("--runs-per-gpu", type=int, default=None, metavar="N",
                             help="runs sharing one GPU at once (default 1 with --gpus); with Ray, each task asks for "
                                  "1/N of a GPU")
    ray_options = parser.add_argument_group("Ray")
    ray_options.add_argument("--ray-address", default=None,
                             help="running cluster to join ('auto', 'ray://host:10001'); default: start a local one")
    slurm = parser.add_argument_group("SLURM (--backend slurm writes <out>/slurm/<suite>.sbatch and .commands)")
    slurm.add_argument("--slurm-time", default=SlurmOptions.time)
    slurm.add_argument("--slurm-mem", default=SlurmOptions.mem)
    slurm.add_argument("--slurm-partition", default=None)
    slurm.add_argument("--slurm-max-parallel", type=int, default=None, help="at most this many array tasks at once")
    slurm.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                       help="shell line run before each task, e.g. 'source .venv/bin/activate'; repeatable")
    args = parser.parse_args(argv)
    for name in ("workers", "threads", "slurm_max_parallel", "runs_per_gpu"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.gpus is not None:
        args.gpus = [gpu.strip() for gpu in args.gpus.split(",")]
        if not all(gpu.isdigit() for gpu in args.gpus) or len(set(args.gpus)) != len(args.gpus):
            parser.error(f"--gpus expects distinct GPU ids like 0,1, got {','.join(args.gpus)!r}")
        if args.backend == "ray" and args.ray_address:
            parser.error("--gpus is for this machine; a Ray cluster has its own GPUs: use --runs-per-gpu alone")
        args.runs_per_gpu = args.runs_per_gpu or 1
    elif args.runs_per_gpu is not None and args.backend == "local":
        parser.error("--runs-per-gpu needs --gpus (which GPUs to place the runs on)")
    if args.backend == "slurm" and args.runs_per_gpu is not None:
        parser.error("--gpus and --runs-per-gpu are for the local and Ray backends; on SLURM, ask for GPUs with "
                     "your site's sbatch options")
    if args.retries < 0:
        parser.error("--retries must be at least 0")
    if args.checkpoint_fraction is not None and not 0 < args.checkpoint_fraction <= 1:
        parser.error("--checkpoint-fraction must be in (0, 1]")
    if args.checkpoint_minutes < 0:
        parser.error("--checkpoint-minutes must be at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    try:
        suite = load_suite(args.suite, parse_overrides(args.overrides), args.scripts_dir.resolve())
        runs = select(suite.runs, args.filter)
        if not runs:
            raise SuiteError(f"suite {suite.name}: no run matches the filters {args.filter}")
        check_flags(runs, args.scripts_dir.resolve())
        settings = LaunchSettings(
            suite=suite.name, out=out, threads=args.threads,
            checkpoint_fraction=args.checkpoint_fraction or suite.checkpoint_fraction,
            checkpoint_minutes=args.checkpoint_minutes,
            scripts_dir=args.scripts_dir.resolve(), track=args.track, wandb_project=args.wandb_project_name,
            wandb_entity=args.wandb_entity, wandb_tags=suite.wandb_tags)
        for run in runs:  # build every command now, so a bad suite fails before anything starts
            settings.script_args(run)
    except SuiteError as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2

    if args.dry_run:
        already = sum(settings.results_path(run).exists() for run in runs)
        print(f"# suite {suite.name}: {len(runs)} runs ({already} have results.json and would be skipped)",
              file=sys.stderr)
        for run in runs:
            print(settings.shell_line(run, sys.executable))
        return 0
    if args.backend == "slurm":
        options = SlurmOptions(args.slurm_time, args.slurm_mem, args.slurm_partition, args.slurm_max_parallel,
                               tuple(args.slurm_setup))
        sbatch_path, commands_path = write_job(runs, settings, options)
        print(f"suite {suite.name}: {len(runs)} runs\n  commands: {commands_path}\n  submit:   sbatch {sbatch_path}")
        return 0

    if args.backend == "ray":
        try:
            import ray  # noqa: F401  (checked now, before any run starts)
        except ImportError:
            print("run.py: error: --backend ray needs ray (pip install -e '.[ray]')", file=sys.stderr)
            return 2
        make_backend = partial(RayBackend, args.ray_address, args.workers, args.gpus, args.runs_per_gpu)
        workers = args.workers  # None: Ray queues every run and starts as many as the cluster has CPUs (GPUs) for
    elif args.gpus:
        gpu_slots = GpuSlots(args.gpus, args.runs_per_gpu)
        make_backend = partial(LocalBackend, gpu_slots)
        workers = min(args.workers or gpu_slots.capacity, gpu_slots.capacity)  # never more runs than GPU slots
    else:
        make_backend = LocalBackend
        workers = args.workers or os.cpu_count() or 1
    try:
        return Runner(runs, settings, make_backend, workers, args.retries).execute()
    except BackendError as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
