"""Provenance (README: Reproducibility): results.json and checkpoints say which code, libraries and machine trained
each segment of a run, and a resume under other code or hardware warns in one line and is recorded."""

import importlib
import json
import pathlib
import subprocess

import pytest
import torch

from cleanrl_pave import provenance

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(env_id="Pendulum-v1", total_timesteps=300, learning_starts=100, hidden_sizes=(8, 8), eval_freq=0,
            eval_episodes=1, progress_interval=0, seed=1)


def git(directory, *args) -> str:
    return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, check=True).stdout


def test_code_version_is_the_checkouts_commit_and_marks_a_dirty_tree(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    git(repo, "add", "a.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    clean = provenance.code_version.__wrapped__(str(repo))
    assert clean["commit"] == git(repo, "rev-parse", "HEAD").strip() and clean["dirty"] is False
    (repo / "a.py").write_text("x = 2\n")
    assert provenance.code_version.__wrapped__(str(repo))["dirty"] is True
    git(repo, "checkout", "-q", "a.py")
    (repo / "new.py").write_text("")  # an untracked file could be run as well: it counts
    assert provenance.code_version.__wrapped__(str(repo))["dirty"] is True
    outside = provenance.code_version.__wrapped__(str(tmp_path))  # not a git checkout: the package version only
    assert outside["commit"] is None and outside["dirty"] is None and outside["package_version"] == "0.1.0"


def test_results_record_the_commit_versions_machine_and_threads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module("cleanrl_pave.td3_continuous")
    results = module.main(module.Args(**TINY, run_name="made"))
    [made] = results["segments"]
    assert made["start_step"] == 0 and made["threads"] == 1
    assert made["code"]["commit"] == git(REPO, "rev-parse", "HEAD").strip()
    assert made["code"]["dirty"] is bool(git(REPO, "status", "--porcelain").strip())
    assert made["versions"]["torch"] == torch.__version__ and made["versions"]["gymnasium"]
    with open("/proc/cpuinfo") as cpuinfo:
        models = {line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")}
    assert made["machine"]["cpu"] in models and made["machine"]["gpu"] is None
    assert json.loads((tmp_path / "runs/made/results.json").read_text())["segments"] == results["segments"]


def test_resuming_under_other_code_or_on_another_cpu_warns_in_one_line_and_is_recorded(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module("cleanrl_pave.td3_continuous")
    module.main(module.Args(**TINY, run_name="moved", checkpoint_freq=200))
    path = tmp_path / "runs/moved/checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["segments"][0]["code"] = {**checkpoint["segments"][0]["code"], "commit": "0" * 40}
    checkpoint["segments"][0]["machine"] = {**checkpoint["segments"][0]["machine"], "cpu": "Some Other CPU"}
    torch.save(checkpoint, path)
    (tmp_path / "runs/moved/results.json").unlink()
    capsys.readouterr()
    results = module.main(module.Args(**TINY, run_name="moved", resume=True))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "resuming under other code or hardware" in warnings[0]
    assert "code 000000000000" in warnings[0] and "cpu Some Other CPU -> " in warnings[0]
    assert [segment["start_step"] for segment in results["segments"]] == [0, 200]
    assert len(results["segments"][1]["differs"]) == 2


@pytest.mark.parametrize("changed, expected", [({}, []), ({"threads": 4}, ["threads 4 -> 1"]),
                                               ({"started": "yesterday", "start_step": 5}, [])])
def test_what_counts_as_a_change_of_code_or_hardware(changed, expected):
    now = provenance.segment(0, torch.device("cpu"))
    assert provenance.differences({**now, **changed}, now) == expected


def test_the_loader_and_tables_say_which_commits_and_machines_made_the_cells(tmp_path):
    from plots.loader import load_runs
    from plots.tables import main as tables

    def segment(commit, dirty, cpu):
        return {"start_step": 0, "code": {"commit": commit, "dirty": dirty, "package_version": "0.1.0"},
                "machine": {"cpu": cpu, "gpu": None}, "threads": 1}

    made = {"a" * 40: (segment("a" * 40, False, "CPU X"),), "b": (segment("a" * 40, False, "CPU X"),
                                                                   segment("b" * 40, True, "CPU Y"))}
    for seed, segments in enumerate(made.values()):
        run_dir = tmp_path / "runs" / f"Pendulum-v1__td3_continuous__{seed}"
        run_dir.mkdir(parents=True)
        evaluation = {"return_mean": -150.0, "smoothness_mean": 0.3, "episode_returns": [-150.0],
                      "episode_smoothness": [0.3]}
        (run_dir / "results.json").write_text(json.dumps({
            "script": "td3_continuous", "exp_name": "td3_continuous", "env_id": "Pendulum-v1", "seed": seed,
            "run_name": run_dir.name, "global_step": 100, "eval": evaluation, "eval_history": [],
            "segments": list(segments)}))
    df = load_runs(tmp_path / "runs")
    codes = df.drop_duplicates("run_name").set_index("seed")[["code", "machine"]]
    assert codes.loc[0].tolist() == ["a" * 12, "CPU X"]
    assert codes.loc[1].tolist() == ["a" * 12 + "," + "b" * 12 + "+dirty", "CPU X,CPU Y"]
    out = tmp_path / "table.md"
    tables(["--runs", str(tmp_path / "runs"), "--provenance", "--out", str(out)])
    assert out.read_text().splitlines()[-1] == (f"Runs: 2; code: {'a' * 12} (2 runs), {'b' * 12}+dirty (1 run); "
                                                "machines: CPU X (2 runs), CPU Y (1 run).")
