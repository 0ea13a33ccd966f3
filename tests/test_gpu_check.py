"""The GPU check's parts (benchmark/measurements/gpu_check.py), on the CPU: the speed modes' flags, one script's
stage-1 verdict, the speed rows, and script_speed.py's variants and deadline (the whole driver runs on a GPU machine;
see README, "GPU")."""

import importlib
import json
import math
import pathlib
import subprocess
import sys
import time

import pytest
import torch
import tyro

from benchmark.measurements import script_speed
from benchmark.measurements.gpu_check import MODES, SPEED_SCRIPTS, check_script, label, mode_flags, run_pool, speed_rows
from tests.helpers import exit_abruptly

REPO = pathlib.Path(__file__).resolve().parents[1]

TINY = dict(env_id="Pendulum-v1", total_timesteps=300, learning_starts=200, eval_freq=150, eval_episodes=1,
            log_freq=100, checkpoint_freq=150, geometry_freq=300, hidden_sizes=(32, 32), cuda=False, compile=False,
            pave_compile=False)


@pytest.mark.parametrize("script", SPEED_SCRIPTS)
def test_each_mode_sets_the_compile_flags_it_names(script):
    module = importlib.import_module(f"cleanrl_pave.{script}")
    has_pave_flag = hasattr(module.Args(), "pave_compile")
    expected = {"eager": (False, False, False), "compile": (True, True, False), "pave-compile": (False, True, False),
                "cudagraphs": (False, True, True)}  # (compile, pave_compile, cudagraphs)
    assert set(MODES) == set(expected)
    for mode in MODES:
        flags = mode_flags(script, mode)
        if mode == "pave-compile" and not has_pave_flag:
            assert flags is None
            continue
        args = tyro.cli(module.Args, args=flags)
        assert (args.compile, args.cudagraphs) == (expected[mode][0], expected[mode][2])
        if has_pave_flag:
            assert args.pave_compile == expected[mode][1]


def test_a_script_passes_stage_one_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    row = check_script("td3_continuous", TINY, "cpu")
    assert row["ok"] and row["problems"] == [] and row["results_json"], row
    assert set(row["tensor_devices"]) == {"cpu"} and row["findings"] == []


def test_the_pool_runs_each_task_in_the_work_folder_and_returns_them_in_order(tmp_path):
    finished = []
    rows = run_pool([(check_script, "td3_continuous", TINY, "cpu"),
                     (check_script, "sac_continuous", {**TINY, "hidden_sizes": (0,)}, "cpu")], 2, str(tmp_path),
                    finished.append)
    assert [row["script"] for row in rows] == ["td3_continuous", "sac_continuous"]
    assert rows[0]["ok"] and not rows[1]["ok"] and sorted(row["script"] for row in finished) == sorted(
        ["td3_continuous", "sac_continuous"])
    assert (tmp_path / "runs" / "td3_continuous" / "results.json").is_file()


def test_a_failing_script_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    row = check_script("sac_continuous", {**TINY, "hidden_sizes": (0,)}, "cpu")
    assert not row["ok"] and not row["results_json"]
    assert row["problems"][0] == "SystemExit: error: --hidden-sizes must be positive integers, got (0,)"


def test_speed_rows_compare_with_eager_and_with_the_base():
    variants = {("td3_continuous", "eager"): [], ("td3_continuous", "compile"): [],
                ("td3_pave_continuous", "eager"): [], ("td3_pave_continuous", "compile"): [],
                ("td3_pave_continuous", "pave-compile"): []}
    steady = {("td3_continuous", "eager"): [100.0, 300.0], ("td3_continuous", "compile"): [400.0],
              ("td3_pave_continuous", "eager"): [50.0], ("td3_pave_continuous", "compile"): [80.0],
              ("td3_pave_continuous", "pave-compile"): []}
    samples = {label(*key): [{"sps": value / 2, "steady_sps": value} for value in values]
               for key, values in steady.items()}
    samples[label("td3_pave_continuous", "compile")][0].update(qf1_loss=0.25, compile_notes=["warning: could not x"])
    rows = {(row["script"], row["mode"]): row for row in speed_rows(samples, {}, variants)}
    assert rows["td3_pave_continuous", "compile"]["error"] == "warning: could not x"
    assert rows["td3_pave_continuous", "compile"]["last_qf1_loss"] == 0.25
    assert rows["td3_continuous", "eager"]["error"] is None
    assert math.isnan(rows["td3_continuous", "eager"]["last_qf1_loss"])
    assert rows["td3_continuous", "eager"]["steady_sps"] == 200.0 and rows["td3_continuous", "eager"]["sps"] == 100.0
    assert rows["td3_continuous", "compile"]["vs_eager"] == 2.0
    assert rows["td3_continuous", "eager"]["step_time_vs_base"] is None
    assert rows["td3_pave_continuous", "eager"]["step_time_vs_base"] == 4.0  # 200 / 50
    assert rows["td3_pave_continuous", "compile"]["step_time_vs_base"] == 5.0  # 400 / 80, the base compiled too
    assert rows["td3_pave_continuous", "compile"]["vs_eager"] == 1.6
    assert math.isnan(rows["td3_pave_continuous", "pave-compile"]["steady_sps"])  # no run in time
    assert rows["td3_pave_continuous", "pave-compile"]["samples"] == 0


def test_speed_measures_each_variant_and_starts_nothing_after_the_deadline(tmp_path):
    variants = {"one thread": ("td3_continuous", ["--threads", "1"]), "bad flag": ("td3_continuous", ["--bogus"])}
    common = ["--hidden-sizes", "32", "32", "--no-cuda"]
    samples, failures = script_speed.measure(variants, "Pendulum-v1", 100, 200, 1, common, tmp_path)
    (sample,) = samples["one thread"]
    assert sample["sps"] > 0 and sample["steady_sps"] > 0  # logged at steps 200 and 300
    assert math.isfinite(sample["qf1_loss"]) and sample["qf1_loss"] > 0 and sample["compile_notes"] == []
    assert samples["bad flag"] == [] and "td3_continuous failed" in failures["bad flag"]
    (tmp_path / "late").mkdir()
    samples, failures = script_speed.measure(variants, "Pendulum-v1", 100, 200, 1, common, tmp_path / "late",
                                      deadline=time.monotonic())
    assert samples == {"one thread": [], "bad flag": []} and failures == {}


def test_compile_notes_catch_the_fallback_warning_and_not_success(monkeypatch, capsys):
    """The pattern against the real lines of compile_with_fallback: its success line and its fallback warning."""
    from cleanrl_pave.compiling import compile_with_fallback

    def broken_compile(fn, **options):
        def compiled(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return compiled

    for compile_fn in (torch.compile, broken_compile):
        monkeypatch.setattr(torch, "compile", compile_fn)
        loss = compile_with_fallback(lambda x: (2 * x).sum(), "a test loss", "--no-compile")
        assert loss(torch.ones(3)).item() == 6.0
    output = capsys.readouterr()
    assert output.out.startswith("compiled a test loss in") and output.err.startswith("warning: could not compile")
    notes = script_speed.COMPILE_NOTE.findall(output.out + output.err)
    assert notes == [output.err.strip()]


def test_a_dead_worker_gives_a_failed_row_instead_of_losing_the_report(tmp_path):
    (failed,) = run_pool([(exit_abruptly, "sac_continuous")], 1, str(tmp_path), lambda row: None)
    assert failed == [{"script": "sac_continuous", "check": "stage 2", "ok": False, "detail": failed[0]["detail"]}]
    assert failed[0]["detail"].startswith("BrokenProcessPool")


def test_the_packing_tool_times_concurrent_runs_placed_by_the_runner(tmp_path):
    """benchmark/measurements/gpu_packing.py with 2 concurrent runs on "GPU 0" (on a CPU, the runs ignore it): two
    runs timed over the same steps, and their sum as the aggregate (how much they overlapped depends on the load)."""
    report = tmp_path / "packing.json"
    done = subprocess.run([sys.executable, "-m", "benchmark.measurements.gpu_packing", "--script", "td3_continuous",
                           "--env-id", "Pendulum-v1", "--runs", "2", "--warmup", "100", "--untimed-steps", "50",
                           "--steps", "200", "--set", "hidden-sizes=32 32", "--json", str(report)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [row] = json.loads(report.read_text())["rows"]
    assert row["runs"] == 2 and len(row["steady_sps_per_run"]) == 2
    assert all(sps > 0 for sps in row["steady_sps_per_run"])
    assert row["aggregate_sps"] == pytest.approx(sum(row["steady_sps_per_run"])) and 0 <= row["overlap"] <= 1
    assert done.stdout.splitlines()[-1] == f"best packing: 2 runs per GPU, {row['aggregate_sps']:.1f} SPS in all"
