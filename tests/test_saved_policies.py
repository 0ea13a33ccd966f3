"""Saved policies: the evaluation command line on real tiny models, and safe loading of models and checkpoints
(weights only; a damaged or foreign file stops every tool with one line naming it)."""

import json
import os
import pathlib
import random
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import torch

from cleanrl_pave.checkpointing import RandomStreams, load_checkpoint, load_file
from cleanrl_pave.critic_geometry import main as geometry_main
from cleanrl_pave.evaluation import main as evaluation_main
from tests.helpers import train_tiny_runs

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = ["td3_continuous", "td3_pave_continuous"]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Tiny Pendulum runs of TD3 base and PAVE with 2 final evaluation episodes: {script: run dir}."""
    return train_tiny_runs(tmp_path_factory.mktemp("saved_policies"), SCRIPTS, eval_episodes=2)


def run_module(module: str, *args, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


# ------------------------------------------------------------------------------------ the evaluation command line


def test_cli_tables_both_models_and_writes_videos_and_the_action_plot(tiny_runs, tmp_path):
    base, pave = (tiny_runs[script] / f"{script}.cleanrl_model" for script in SCRIPTS)
    plot = tmp_path / "figures" / "actions.png"
    done = run_module("cleanrl_pave.evaluation", "--model", f"base={base}", "--model", pave, "--episodes", 2,
                      "--video", tmp_path / "videos", "--plot-actions", plot, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:3]}
    assert set(rows) == {"base", "td3_pave_continuous"}
    # the runs' own final evaluations (2 episodes, the same seeds) give the same numbers
    for label, script in (("base", "td3_continuous"), ("td3_pave_continuous", "td3_pave_continuous")):
        final = json.loads((tiny_runs[script] / "results.json").read_text())["eval"]
        assert f"{final['return_mean']:.2f} ({final['return_std']:.2f})" in rows[label]
        assert f"{final['smoothness_mean']:.4f} ({final['smoothness_std']:.4f})" in rows[label]
        assert "10001-10002" in rows[label]
        change = final["episode_action_change"]
        assert f"{np.mean(change):.4f} ({np.std(change):.4f})" in rows[label]
    image = matplotlib.image.imread(plot)
    assert image.ndim == 3 and min(image.shape[:2]) > 200 and image[..., :3].std() > 0.05  # a drawn picture
    assert sorted(path.name for path in (tmp_path / "videos").glob("*/*.mp4")) == [
        "base-episode-0.mp4", "base-episode-1.mp4",
        "td3_pave_continuous-episode-0.mp4", "td3_pave_continuous-episode-1.mp4"]


def test_cli_reads_checkpoints_and_seeds_every_model_alike(tiny_runs, capsys):
    results = evaluation_main(["--model", str(tiny_runs["td3_continuous"] / "checkpoint.pt"),
                               "--model", str(tiny_runs["td3_continuous"] / "td3_continuous.cleanrl_model"),
                               "--episodes", "1", "--seed", "7"])
    assert [row["label"] for row in results] == ["td3_continuous", "td3_continuous#2"]
    assert [row["seed"] for row in results] == [7, 7]
    # the checkpoint holds the step-200 actor, the model the final one: different policies, same start
    assert results[0]["episode_returns"] != results[1]["episode_returns"]
    assert "td3_continuous#2" in capsys.readouterr().out


def test_plot_actions_without_matplotlib_names_the_extra(tiny_runs, tmp_path):
    fake = tmp_path / "missing" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('matplotlib is not installed')\n")
    model = tiny_runs["td3_continuous"] / "td3_continuous.cleanrl_model"
    done = run_module("cleanrl_pave.evaluation", "--model", model, "--plot-actions", tmp_path / "a.png", cwd=tmp_path,
                      env={"PYTHONPATH": f"{fake.parent}{os.pathsep}{REPO}"})
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'cleanrl_pave[plot]'" in lines[0]
    assert not (tmp_path / "a.png").exists()


# ------------------------------------------------------------------------------------------------ safe loading


class RunsCodeWhenUnpickled:
    """Unpickling this touches `marker`: what a malicious file would do with a real payload."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def damaged_files(tiny_runs, directory: pathlib.Path) -> dict[str, tuple[pathlib.Path, str]]:
    """{kind: (file, what the error must say)}."""
    model = (tiny_runs["td3_continuous"] / "td3_continuous.cleanrl_model").read_bytes()
    files = {"empty": (b"", "is empty"), "garbage": (b"not a checkpoint at all\n" * 40, "is not a PyTorch file"),
             "truncated": (model[: len(model) // 2], "is truncated or corrupt")}
    paths = {}
    for kind, (content, message) in files.items():
        (directory / kind).mkdir(parents=True, exist_ok=True)
        path = directory / kind / "checkpoint.pt"
        path.write_bytes(content)
        paths[kind] = (path, message)
    (directory / "code").mkdir(exist_ok=True)
    torch.save({"script": "td3_continuous", "payload": RunsCodeWhenUnpickled(directory / "ran")},
               directory / "code" / "checkpoint.pt")
    paths["code"] = (directory / "code" / "checkpoint.pt", "holds objects other than tensors and plain types")
    return paths


def test_damaged_or_foreign_files_stop_every_loader_with_one_line(tiny_runs, tmp_path):
    for kind, (path, message) in damaged_files(tiny_runs, tmp_path).items():
        for load in (lambda: load_checkpoint(str(path), "td3_continuous", "Pendulum-v1"),
                     lambda: evaluation_main(["--model", str(path)]),
                     lambda: geometry_main(["--model", str(path)])):
            with pytest.raises(SystemExit) as stopped:
                load()
            text = str(stopped.value.code)
            assert text.startswith(f"error: {path} ") and message in text and "\n" not in text, (kind, text)
    assert not (tmp_path / "ran").exists(), "loading ran code from the file"


@pytest.mark.parametrize("command", ["resume", "evaluation", "geometry"])
def test_a_garbage_file_gives_one_line_and_a_failing_exit_code(tiny_runs, tmp_path, command):
    path, message = damaged_files(tiny_runs, tmp_path / "runs")["truncated"]
    if command == "resume":
        done = run_module("cleanrl_pave.td3_continuous", "--env-id", "Pendulum-v1", "--resume", "--run-name",
                          "truncated", cwd=tmp_path)
        path = pathlib.Path("runs/truncated/checkpoint.pt")
    else:
        done = run_module(f"cleanrl_pave.{'critic_geometry' if command == 'geometry' else 'evaluation'}",
                          "--model", path, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path} ") and message in lines[0], done.stderr


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    numpy_rng, torch_generator = np.random.default_rng(3), torch.Generator().manual_seed(4)
    random.seed(1), np.random.seed(2), torch.manual_seed(5)
    np.random.normal()  # leaves a cached Gaussian in NumPy's legacy state
    streams = RandomStreams(numpy_rng, torch_generator)
    torch.save({"rng": streams.state_dict()}, tmp_path / "state.pt")

    def draws():
        return (random.random(), np.random.normal(), torch.rand(1).item(), numpy_rng.random(),
                torch.rand(1, generator=torch_generator).item())

    expected = draws()
    draws()
    streams.load_state_dict(load_file(str(tmp_path / "state.pt"))["rng"])
    assert draws() == expected
