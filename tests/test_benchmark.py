"""The benchmark runner end to end: real runner processes launching the real cleanrl_pave scripts.

Tiny runs (Pendulum, 300 steps, 32-32 networks) keep this file to a few minutes on 2 cores.
"""

import csv
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tyro

from benchmark.backends import BackendError, GpuSlots, Job, LocalBackend
from benchmark.run import parse_args

REPO = Path(__file__).resolve().parent.parent
RUN_PY = REPO / "benchmark" / "run.py"
SPEED_PY = REPO / "benchmark" / "measurements" / "script_speed.py"
SCRIPTS_DIR = REPO / "cleanrl_pave"
PAPER_SEEDS = [178132, 410580, 922852, 787576, 660993]
PAPER_ENVS = ["LunarLanderContinuous-v3", "Pendulum-v1", "Reacher-v5", "Ant-v5", "Hopper-v5", "Walker2d-v5"]
TRAINING_STEPS = {"Pendulum-v1": 100_000, "LunarLanderContinuous-v3": 500_000, "Reacher-v5": 500_000,
                  "Ant-v5": 1_000_000, "Hopper-v5": 1_000_000, "Walker2d-v5": 1_000_000}  # README: The backbones
SUITE_SIZES = {"td3_main": 150, "sac_main": 150, "ablation": 80, "sensitivity": 105, "critic_centric": 40,
               "caps_pave": 20, "lipsnet": 120, "quick": 4}

TINY_SUITE = {
    "description": "test suite: 4 tiny runs",
    "seeds": [1, 2],
    "envs": ["Pendulum-v1"],
    "scripts": ["td3_continuous", "sac_continuous"],
    "flags": {"total-timesteps": 300, "learning-starts": 100, "buffer-size": 1000, "hidden-sizes": [32, 32],
              "eval-freq": 0, "eval-episodes": 1},
}
TINY_RUNS = ["Pendulum-v1__td3_continuous__1", "Pendulum-v1__td3_continuous__2",
             "Pendulum-v1__sac_continuous__1", "Pendulum-v1__sac_continuous__2"]


def benchmark(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUN_PY), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def start_benchmark(*args) -> subprocess.Popen:
    """A runner in its own process group, so the test can kill it and its runs together."""
    return subprocess.Popen([sys.executable, str(RUN_PY), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def write_suite(directory: Path, name: str, suite: dict) -> Path:
    path = directory / f"{name}.json"
    path.write_text(json.dumps(suite))
    return path


def dry_run(*args) -> list[dict]:
    """The dry-run's commands, each parsed into its script and flags."""
    result = benchmark(*args, "--dry-run")
    assert result.returncode == 0, result.stderr
    commands = []
    for line in result.stdout.splitlines():
        tokens = shlex.split(line.split(" && ", 1)[1])
        script_index = next(i for i, token in enumerate(tokens) if token.endswith(".py"))
        flags = tokens[script_index + 1:]
        commands.append({"script": Path(tokens[script_index]).stem, "args": flags,
                         **{name: flags[flags.index(f"--{name}") + 1]
                            for name in ("env-id", "seed", "run-name", "checkpoint-freq")}})
    return commands


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def results(out: Path, name: str) -> Path:
    return out / "runs" / name / "results.json"


def state(out: Path, suite: str) -> dict:
    return json.loads((out / "state" / f"{suite}.json").read_text())["runs"]


def processes_in(directory: Path) -> list[int]:
    """Pids of live processes whose working directory is `directory` (the runs of a runner using it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == directory:
                pids.append(int(entry.name))
        except OSError:
            pass
    return pids


@pytest.fixture
def tiny_suite(tmp_path) -> Path:
    return write_suite(tmp_path, "tiny", TINY_SUITE)


# ---------------------------------------------------------------- suites and commands (no training)

def test_td3_main_dry_run_lists_150_commands_with_the_paper_seeds():
    commands = dry_run("--suite", "td3_main")
    assert len(commands) == 150
    assert len({command["run-name"] for command in commands}) == 150
    seeds = [int(command["seed"]) for command in commands]
    assert set(seeds) == set(PAPER_SEEDS) and all(seeds.count(seed) == 30 for seed in PAPER_SEEDS)
    assert {command["env-id"] for command in commands} == set(PAPER_ENVS)
    assert {command["script"] for command in commands} == {
        "td3_continuous", "td3_caps_continuous", "td3_grad_continuous", "td3_asap_continuous", "td3_pave_continuous"}
    for command in commands:
        assert "--resume" in command["args"] and command["args"][command["args"].index("--threads") + 1] == "1"
        assert command["run-name"] == f"{command['env-id']}__{command['script']}__{command['seed']}"


@pytest.mark.parametrize("suite, size", SUITE_SIZES.items())
def test_every_suite_expands_with_paper_training_steps(suite, size):
    commands = dry_run("--suite", suite)
    assert len(commands) == size and len({command["run-name"] for command in commands}) == size
    for command in commands:
        steps = int(command["args"][command["args"].index("--total-timesteps") + 1])
        if suite != "quick":
            assert steps == TRAINING_STEPS[command["env-id"]]
        assert int(command["checkpoint-freq"]) == round(steps * 0.1)


def test_suite_commands_parse_with_each_scripts_own_cli():
    """Every flag a suite passes (lambdas, tracking, resume, ...) exists in the scripts written so far."""
    parsers = {}
    checked = set()
    for suite in SUITE_SIZES:
        for command in dry_run("--suite", suite, "--track"):
            path = SCRIPTS_DIR / f"{command['script']}.py"
            variant = (command["script"], tuple(token for token in command["args"] if token.startswith("--")))
            if not path.exists() or variant in checked:
                continue
            checked.add(variant)
            if command["script"] not in parsers:
                spec = importlib.util.spec_from_file_location(f"benchmark_test_{command['script']}", path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                parsers[command["script"]] = module.Args
            args = tyro.cli(parsers[command["script"]], args=command["args"])
            assert args.resume and args.run_name == command["run-name"]
            assert args.track and suite in args.wandb_tags
            assert args.wandb_group == command["run-name"].rsplit("__", 1)[0]  # the cell: env, script and tag
    assert "td3_continuous" in parsers and "sac_continuous" in parsers


def test_filters_and_overrides_shape_the_commands():
    commands = dry_run("--suite", "td3_main", "--filter", "env=Walker*", "--filter", "script=td3_pave*,td3_continuous",
                       "--filter", "seed=178132", "--set", "total-timesteps=2000", "--set", "hidden-sizes=64 64")
    assert [(command["env-id"], command["script"]) for command in commands] == [
        ("Walker2d-v5", "td3_continuous"), ("Walker2d-v5", "td3_pave_continuous")]
    for command in commands:
        assert command["args"].count("--total-timesteps") == 1 and command["checkpoint-freq"] == "200"
        assert shlex.join(command["args"]).find("--hidden-sizes 64 64") >= 0


def test_ablation_and_sensitivity_cells_set_the_pave_flags():
    ablation = {command["run-name"]: command["args"] for command in dry_run("--suite", "ablation")}
    curv_only = ablation["Walker2d-v5__td3_pave_continuous__curv__178132"]
    assert shlex.join(curv_only).count("--lam-mpr 0") == 1 and "--lam-vfc" in curv_only
    assert "--lam-curv" not in curv_only
    assert "Walker2d-v5__td3_continuous__178132" in ablation  # the all-off cell is the base
    tags = {command["run-name"].split("__")[2] for command in dry_run("--suite", "sensitivity")
            if command["run-name"].count("__") == 3}
    assert {"lam-mpr0.001", "lam-vfc10", "lam-curv0.0001", "pave-sigma0.1", "pave-delta10"} <= tags


def test_bad_input_gives_a_one_line_error(tmp_path):
    unknown_suite = benchmark("--suite", "no_such_suite", "--dry-run")
    assert unknown_suite.returncode == 2 and "unknown suite 'no_such_suite'" in unknown_suite.stderr
    assert len(unknown_suite.stderr.strip().splitlines()) == 1
    bad_script = write_suite(tmp_path, "bad_script", {**TINY_SUITE, "scripts": ["td3_nope_continuous"]})
    unknown_script = benchmark("--suite", bad_script, "--dry-run")
    assert unknown_script.returncode == 2 and "unknown script 'td3_nope_continuous'" in unknown_script.stderr
    assert len(unknown_script.stderr.strip().splitlines()) == 1
    runner_flag = benchmark("--suite", "quick", "--set", "seed=3", "--dry-run")
    assert runner_flag.returncode == 2 and "set by the runner" in runner_flag.stderr
    binary = tmp_path / "binary.json"
    binary.write_bytes(bytes(range(128, 256)))  # not UTF-8
    not_text = benchmark("--suite", binary, "--dry-run")
    assert not_text.returncode == 2 and not_text.stderr.strip().splitlines() == [
        f"run.py: error: {binary}: not a text file (a suite is a JSON file, see benchmark/README.md)"]
    typo = benchmark("--suite", "quick", "--set", "total-timestep=10", "--dry-run")  # caught before any run starts
    assert typo.returncode == 2 and typo.stdout == "" and typo.stderr.strip().splitlines() == [
        "run.py: error: run Pendulum-v1__td3_continuous__178132: --total-timestep is not a flag of td3_continuous.py "
        "(did you mean --total-timesteps?)"]


def test_slurm_job_has_one_array_task_per_run(tmp_path):
    out = tmp_path / "cluster"
    result = benchmark("--suite", "td3_main", "--backend", "slurm", "--out", out, "--slurm-max-parallel", "20")
    assert result.returncode == 0, result.stderr
    sbatch = (out / "slurm" / "td3_main.sbatch").read_text()
    assert "#SBATCH --array=0-149%20" in sbatch and "#SBATCH --cpus-per-task=1" in sbatch
    lines = (out / "slurm" / "td3_main.commands").read_text().splitlines()
    names = [command["run-name"] for command in dry_run("--suite", "td3_main", "--out", out)]
    assert len(lines) == 150
    for line, name in zip(lines, names, strict=True):
        assert f"--run-name {name} " in line and f"logs/{name}.log" in line


def test_slurm_array_task_runs_its_line_once(tmp_path, tiny_suite):
    out = tmp_path / "cluster"
    assert benchmark("--suite", tiny_suite, "--backend", "slurm", "--out", out).returncode == 0
    sbatch = out / "slurm" / "tiny.sbatch"
    assert "#SBATCH --array=0-3\n" in sbatch.read_text()
    task = {**os.environ, "SLURM_ARRAY_TASK_ID": "2"}
    subprocess.run(["bash", sbatch], env=task, check=True, timeout=300)
    assert [name for name in TINY_RUNS if results(out, name).exists()] == [TINY_RUNS[2]]
    finished = results(out, TINY_RUNS[2]).stat().st_mtime_ns
    subprocess.run(["bash", sbatch], env=task, check=True, timeout=60)  # a resubmitted task skips a done run
    assert results(out, TINY_RUNS[2]).stat().st_mtime_ns == finished


# ---------------------------------------------------------------- running suites

def test_local_suite_runs_then_skips_everything(tmp_path, tiny_suite):
    out = tmp_path / "out"
    first = benchmark("--suite", tiny_suite, "--out", out, "--workers", 2)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "4 done, 0 skipped" in first.stdout
    done_lines = [line for line in first.stdout.splitlines() if "] done " in line]
    # the first run done is a TD3 one (they start first) while no SAC run has finished: no other script's speed
    # stands for SAC's, so no suite ETA; by the third, every script left has a finished run; after the last, none
    assert len(done_lines) == 4 and "ETA" not in done_lines[0] and "ETA" not in done_lines[3]
    assert re.search(r"in \d+s; suite ETA \d+s$", done_lines[2])
    for name in TINY_RUNS:
        run_results = json.loads(results(out, name).read_text())
        assert run_results["run_name"] == name and run_results["global_step"] == 300
        assert (out / "logs" / f"{name}.log").exists()
    assert {entry["status"] for entry in state(out, "tiny").values()} == {"done"}
    mtimes = {name: results(out, name).stat().st_mtime_ns for name in TINY_RUNS}

    second = benchmark("--suite", tiny_suite, "--out", out, "--workers", 2)
    assert second.returncode == 0 and "0 done, 4 skipped" in second.stdout
    assert {name: results(out, name).stat().st_mtime_ns for name in TINY_RUNS} == mtimes
    check_tables_and_curves(out, tmp_path)


def check_tables_and_curves(out: Path, tmp_path: Path) -> None:
    """The suite's real runs make a table and curves; a W&B-format export of the same runs gives the same table."""
    figures = tmp_path / "figures" / "tiny"
    for command in (["tables.py", "--runs", out / "runs", "--out", tmp_path / "table.md"],
                    ["curves.py", "--runs", out / "runs", "--out", figures]):
        done = subprocess.run([sys.executable, str(REPO / "plots" / command[0]), *map(str, command[1:])],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    table = (tmp_path / "table.md").read_text()
    assert "Pendulum-v1" in table and "base" in table
    for kind in ("return", "smoothness"):
        assert figures.with_name(f"tiny_{kind}.png").is_file() and figures.with_name(f"tiny_{kind}.pdf").is_file()

    sys.path.insert(0, str(REPO))
    try:
        from plots.loader import load_runs
        from plots.tables import make_table, summarize
    finally:
        sys.path.remove(str(REPO))
    finals = [json.loads(results(out, name).read_text()) for name in TINY_RUNS]
    local = load_runs(out / "runs")
    summary = summarize(local).set_index(["backbone", "env", "method", "metric"])
    for backbone in ("td3", "sac"):
        returns = [r["eval"]["return_mean"] for r in finals if r["script"].startswith(backbone)]
        assert summary.loc[(backbone, "Pendulum-v1", "base", "re"), "mean"] == pytest.approx(sum(returns) / 2)

    export = tmp_path / "wandb_export.csv"  # the run table as the W&B UI exports it: summary = last logged values
    with open(export, "w", newline="") as file:
        writer = csv.writer(file, quoting=csv.QUOTE_ALL)
        writer.writerow(["Name", "State", "Notes", "User", "Tags", "Created", "Runtime", "Sweep", "env_id",
                         "exp_name", "seed", "eval/episodic_return", "eval/smoothness", "global_step"])
        for r in finals:
            writer.writerow([r["run_name"], "finished", "-", "someone", "", "2026-01-01T00:00:00.000Z", "9", "",
                             r["env_id"], r["exp_name"], r["seed"], repr(r["eval"]["return_mean"]),
                             repr(r["eval"]["smoothness_mean"]), r["global_step"]])
    assert make_table(load_runs(export)) == make_table(local)


def test_suite_eta_from_the_finished_runs_seconds_per_step(tmp_path):
    from benchmark.commands import LaunchSettings
    from benchmark.suite_loader import Run
    from benchmark.run import Runner

    def run(script: str, steps: int, seed: int) -> Run:
        return Run(f"Pendulum-v1__{script}__{seed}", "Pendulum-v1", script, seed, "", {"total-timesteps": steps})

    settings = LaunchSettings(suite="eta", out=tmp_path)
    finished = [run("td3_continuous", 1000, 1), run("td3_pave_continuous", 1000, 1)]
    for done, wall_time in zip(finished, (100.0, 400.0)):  # 0.1 and 0.4 s per step
        settings.results_path(done).parent.mkdir(parents=True)
        settings.results_path(done).write_text(json.dumps({"wall_time_s": wall_time, "global_step": 1000}))
    left = [run("td3_continuous", 2000, 2), run("td3_pave_continuous", 1000, 2), run("sac_continuous", 1000, 1)]
    runner = Runner(finished + left, settings, make_backend=None, workers=2, retries=0)
    assert runner.suite_eta() is None  # nothing has finished yet
    for done in finished:
        runner.record_speed(done)
    runner.pending.extend(left[1:])
    runner.running[left[0].name] = (left[0], time.monotonic() - 30.0)
    assert runner.suite_eta() is None  # sac_continuous has no finished run: no other script's speed stands for it
    runner.pending.remove(left[2])
    # td3 base 2000 x 0.1 s - 30 s done, pave 1000 x 0.4 s: on 1 worker their sum
    runner.workers = 1
    assert runner.suite_eta() == pytest.approx(170.0 + 400.0, abs=0.5)
    runner.workers = 2
    assert runner.suite_eta() == pytest.approx(400.0, abs=0.5)  # never less than the longest run left


def test_failed_run_is_retried_reported_and_fails_the_runner(tmp_path):
    out = tmp_path / "out"
    suite = write_suite(tmp_path, "broken", {**TINY_SUITE, "seeds": [1], "scripts": ["td3_continuous"],
                                             "cells": [{"tag": "bad", "flags": {"eval-episodes": 0}}]})
    result = benchmark("--suite", suite, "--out", out, "--retries", 1)
    log = out / "logs" / "Pendulum-v1__td3_continuous__bad__1.log"
    assert result.returncode == 1
    assert "0 done, 0 skipped (results existed), 1 failed" in result.stdout
    assert f"Pendulum-v1__td3_continuous__bad__1: exit 1, log {log}" in result.stdout  # the script's one-line error
    assert log.read_text().count("===== benchmark runner") == 2  # the first attempt and one retry
    entry = state(out, "broken")["Pendulum-v1__td3_continuous__bad__1"]
    assert entry["status"] == "failed" and entry["attempts"] == 2 and entry["log"] == str(log)


def test_killed_suite_resumes_without_redoing_finished_runs(tmp_path, tiny_suite):
    out = tmp_path / "out"
    td3_only = ["--suite", tiny_suite, "--out", out, "--filter", "script=td3_continuous"]  # two runs suffice
    first, second = TINY_RUNS[0], TINY_RUNS[1]
    never_killed = start_benchmark("--suite", tiny_suite, "--out", tmp_path / "reference", "--filter",
                                   "script=td3_continuous", "--workers", 1)
    # 1. SIGKILL the runner's whole process group once one run finished and the next has a checkpoint: its runs,
    #    in sessions of their own, get SIGTERM (the death signal) and save a checkpoint before they exit.
    runner = start_benchmark(*td3_only, "--workers", 1)
    checkpoint = out / "runs" / second / "checkpoint.pt"
    wait_for(lambda: results(out, first).exists() and checkpoint.exists(), 300, "a finished run and a checkpoint")
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait()
    wait_for(lambda: not processes_in(out), 10, "the killed runs to end")
    assert not results(out, second).exists()
    finished = results(out, first).stat().st_mtime_ns

    # 2. SIGTERM a re-run once the second run has resumed: the runner stops its run, records it as
    #    interrupted, leaves no process behind and exits 128 + SIGTERM.
    runner = start_benchmark(*td3_only)
    second_log = out / "logs" / f"{second}.log"
    wait_for(lambda: "resuming at step" in second_log.read_text(), 120, "the second run to resume")
    runner.send_signal(signal.SIGTERM)
    output = runner.communicate(timeout=60)[0]
    assert runner.returncode == 128 + signal.SIGTERM, output
    assert f"{second}  attempt 2, resuming from checkpoint" in output
    assert state(out, "tiny")[second]["status"] == "interrupted"
    assert not processes_in(out)

    # 3. A final re-run completes the suite and leaves the finished run alone; the summary names the resumed run.
    final = benchmark(*td3_only)
    assert final.returncode == 0, final.stdout
    assert "1 done, 1 skipped" in final.stdout and results(out, second).exists()
    assert results(out, first).stat().st_mtime_ns == finished
    assert {entry["status"] for entry in state(out, "tiny").values()} == {"done"}
    segments = json.loads(results(out, second).read_text())["segments"]
    assert len(segments) == 3  # the first attempt and two resumes
    resumed_line = f"  {second}: " + ", ".join(str(segment["start_step"]) for segment in segments)
    assert "finished runs that were resumed" in final.stdout and resumed_line in final.stdout.splitlines()

    # 4. Killed twice or never, the suite's results are the same.
    assert never_killed.wait(timeout=300) == 0
    for name in (first, second):
        expected = json.loads(results(tmp_path / "reference", name).read_text())
        got = json.loads(results(out, name).read_text())
        assert got["eval"] == expected["eval"] and got["eval_history"] == expected["eval_history"], name


def test_suite_runs_on_ray_started_by_the_runner_or_already_running(tmp_path, tiny_suite, monkeypatch):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    # Ray's memory monitor kills tasks when the whole machine is near full, whoever uses the memory;
    # on a shared test machine that would make this test flaky, and it is not what the test is about.
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "0")
    out = tmp_path / "out"
    # Seed 1: the runner starts a local Ray instance itself (ray.init(num_cpus=2, include_dashboard=False)), given
    # GPUs 3 and 5 (Ray counts declared GPUs as resources; these CPU runs ignore them): each task asks for half a
    # GPU, and Ray tells its run which one through CUDA_VISIBLE_DEVICES, a physical id of the two.
    started = benchmark("--suite", tiny_suite, "--out", out, "--backend", "ray", "--workers", 2, "--filter", "seed=1",
                        "--gpus", "3,5", "--runs-per-gpu", 2)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "2 done, 0 skipped" in started.stdout
    for name in (name for name in TINY_RUNS if name.endswith("__1")):
        log = (out / "logs" / f"{name}.log").read_text()
        assert re.search(r"^CUDA_VISIBLE_DEVICES=[35]$", log, re.MULTILINE), log[:500]
    # Seed 2: the runner joins a Ray instance that is already running.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        joined = benchmark("--suite", tiny_suite, "--out", out, "--backend", "ray", "--ray-address", address)
    finally:
        ray.shutdown()
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert "2 done, 2 skipped" in joined.stdout
    assert all(json.loads(results(out, name).read_text())["run_name"] == name for name in TINY_RUNS)


def test_local_runs_on_gpus_go_to_the_least_busy_one_at_most_n_per_gpu(tmp_path):
    """--gpus 3,5 --runs-per-gpu 2: four runs alternate 3, 5, 3, 5 (each sees only its GPU, as cuda:0), a fifth has
    no slot (the runner never starts more runs than slots), and a run that ends frees its slot."""
    slots = GpuSlots(["3", "5"], runs_per_gpu=2)
    backend = LocalBackend(slots)
    show_gpu = ["-c", "import os, sys; sys.stdin.close(); print('sees GPU', os.environ['CUDA_VISIBLE_DEVICES'])"]

    def submit(name: str) -> None:
        backend.submit(Job(name, show_gpu, str(tmp_path), {}, str(tmp_path / f"{name}.log"), "header\n"))

    for index in range(4):
        submit(f"run{index}")
    assert slots.capacity == 4 and slots.runs_on == {"3": 2, "5": 2}
    with pytest.raises(BackendError, match="no GPU slot left for run4"):
        slots.take("run4")
    ended = []
    wait_for(lambda: ended.extend(backend.poll(timeout=0.1)) or len(ended) == 4, 60, "the four runs")
    assert all(item.returncode == 0 for item in ended) and slots.runs_on == {"3": 0, "5": 0}
    for index, gpu in enumerate(["3", "5", "3", "5"]):
        assert (tmp_path / f"run{index}.log").read_text() == f"header\nCUDA_VISIBLE_DEVICES={gpu}\nsees GPU {gpu}\n"
    submit("run5")  # a freed slot is taken again, the first GPU first
    wait_for(lambda: ended.extend(backend.poll(timeout=0.1)) or len(ended) == 5, 60, "the fifth run")
    assert (tmp_path / "run5.log").read_text().endswith("sees GPU 3\n")


@pytest.mark.parametrize("flags, error", [
    (["--runs-per-gpu", "2"], "--runs-per-gpu needs --gpus"),
    (["--gpus", "0,x"], "--gpus expects distinct GPU ids like 0,1, got '0,x'"),
    (["--gpus", "0,0"], "--gpus expects distinct GPU ids"),
    (["--gpus", "0", "--runs-per-gpu", "0"], "--runs-per-gpu must be at least 1"),
    (["--gpus", "0", "--backend", "ray", "--ray-address", "auto"], "a Ray cluster has its own GPUs"),
    (["--gpus", "0", "--backend", "slurm"], "on SLURM, ask for GPUs"),
])
def test_gpu_flags_out_of_place_are_one_line_errors(flags, error, capsys):
    with pytest.raises(SystemExit) as exit_code:
        parse_args(["--suite", "quick", "--dry-run", *flags])
    assert exit_code.value.code == 2 and error in capsys.readouterr().err.splitlines()[-1]


def test_speed_benchmark_times_learning_steps_of_named_and_path_scripts(tmp_path):
    """benchmark/measurements/script_speed.py at its smallest: a script by name and one by path (as for a worktree of
    another commit), the timed window read from each run's TensorBoard events."""
    output = tmp_path / "speed.json"
    result = subprocess.run([sys.executable, str(SPEED_PY), "td3_continuous",
                             str(SCRIPTS_DIR / "sac_continuous.py"), "--env-id", "Pendulum-v1", "--warmup", "100",
                             "--untimed-steps", "50", "--steps", "100", "--repetitions", "1", "--json", str(output),
                             "--", "--hidden-sizes", "16", "16"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    measured = json.loads(output.read_text())
    assert set(measured["median_steady_sps"]) == {"td3_continuous", str(SCRIPTS_DIR / "sac_continuous.py")}
    assert all(sps > 0 for sps in measured["median_steady_sps"].values())
    assert all(seconds == 0.0 for seconds in measured["median_compile_s"].values())  # nothing compiles by default
    bad = subprocess.run([sys.executable, str(SPEED_PY), "td3_continuous", "--steps", "75"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        "error: --warmup, --untimed-steps and --steps must be multiples of 50"]


def test_runners_sharing_an_output_folder_keep_each_others_state(tmp_path):
    """Two runners on one suite and --out (two --filter slices at once) update the state file concurrently: neither
    crashes on the other's temporary file and neither loses the other's records."""
    writer = (
        "import sys\n"
        "from pathlib import Path\n"
        "from benchmark.suite_loader import Run\n"
        "from benchmark.run import StateFile\n"
        "state = StateFile(Path(sys.argv[1]))\n"
        "for index in range(60):\n"
        "    run = Run(f'Pendulum-v1__{sys.argv[2]}__{index}', 'Pendulum-v1', sys.argv[2], index, '', {})\n"
        "    state.update(run, status='running')\n"
        "    state.update(run, status='done')\n"
    )
    path = tmp_path / "state" / "suite.json"
    writers = [subprocess.Popen([sys.executable, "-c", writer, str(path), script], cwd=REPO,
                                stderr=subprocess.PIPE, text=True) for script in ("td3_continuous", "sac_continuous")]
    for process in writers:
        assert process.wait(timeout=120) == 0, process.stderr.read()
    runs = json.loads(path.read_text())["runs"]
    assert len(runs) == 120 and {entry["status"] for entry in runs.values()} == {"done"}


def test_an_unreadable_state_file_is_kept_aside_and_replaced(tmp_path, capsys):
    """A damaged state file (say, from an older runner killed mid-write) neither stops the runner nor is lost."""
    from benchmark.suite_loader import Run
    from benchmark.run import StateFile

    path = tmp_path / "state" / "suite.json"
    path.parent.mkdir()
    path.write_text('{"runs": {}}\n}')  # valid JSON followed by stray text, as a clobbered write leaves it
    state = StateFile(path)
    state.update(Run("Pendulum-v1__td3_continuous__1", "Pendulum-v1", "td3_continuous", 1, "", {}), status="done")
    assert "is unreadable" in capsys.readouterr().err
    assert json.loads(path.read_text())["runs"]["Pendulum-v1__td3_continuous__1"]["status"] == "done"
    assert [kept.read_text() for kept in path.parent.glob("suite.json.unreadable-*")] == ['{"runs": {}}\n}']
