"""Helpers for the tests that train scripts, and what every script's losses mean.

Every script's smoke run (past learning_starts, so every update path executes, with its outputs checked) is the
uninterrupted reference run of tests/test_exact_resume.py."""

import importlib
import json
import pathlib
import re

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from tests.helpers import eager

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "cleanrl_pave"
SCRIPTS = sorted(path.stem for path in PACKAGE.glob("*_continuous.py"))
LOGGED = re.compile(r'add_scalar\(\s*f?"(losses/[A-Za-z0-9_]+)"')
BASE_SCALARS = {"charts/SPS", "charts/episodic_return", "losses/qf1_loss", "losses/qf2_loss", "losses/actor_loss",
                "losses/qf1_values", "eval/episodic_return", "eval/smoothness", "eval/action_change"}


def scalars(run_dir: pathlib.Path) -> dict[str, list]:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: accumulator.Scalars(tag) for tag in accumulator.Tags()["scalars"]}


def method_scalars(script: str) -> set[str]:
    """The `losses/...` names a variant logs beyond its base's: its method terms."""
    base = "td3_continuous" if script.startswith("td3") else "sac_continuous"
    own = set(LOGGED.findall((PACKAGE / f"{script}.py").read_text()))
    return own - set(LOGGED.findall((PACKAGE / f"{base}.py").read_text()))


def tiny_run(script: str, env_id: str, **overrides) -> tuple[dict, pathlib.Path]:
    module = importlib.import_module(f"cleanrl_pave.{script}")
    settings = dict(env_id=env_id, total_timesteps=300, learning_starts=100, hidden_sizes=(32, 32), eval_freq=150,
                    eval_episodes=1, run_name="smoke", seed=1, save_model=True, **eager(module))
    settings.update(overrides)
    return module.main(module.Args(**settings)), pathlib.Path("runs/smoke")


def check_outputs(script: str, run_dir: pathlib.Path, total: int, eval_freq: int) -> None:
    """A finished run's results.json, TensorBoard scalars (the base's and the method's own) and weights-only model."""
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk["script"] == script and on_disk["global_step"] == total
    assert len(on_disk["eval"]["episode_returns"]) == on_disk["config"]["eval_episodes"]
    assert [entry["step"] for entry in on_disk["eval_history"]] == list(range(eval_freq, total + 1, eval_freq))
    logged = scalars(run_dir)
    missing = (BASE_SCALARS | method_scalars(script)) - logged.keys()
    assert not missing, f"{script} did not log {sorted(missing)}"
    assert max(event.step for event in logged["losses/qf1_loss"]) == total
    assert_loads_weights_only(run_dir / f"{script}.cleanrl_model")


def assert_same(safe, full, where="payload") -> None:
    assert type(safe) is type(full), where
    if isinstance(full, torch.Tensor):
        assert safe.dtype == full.dtype and torch.equal(safe, full), where
    elif isinstance(full, dict):
        assert safe.keys() == full.keys(), where
        for key in full:
            assert_same(safe[key], full[key], f"{where}[{key!r}]")
    elif isinstance(full, (list, tuple)):
        assert len(safe) == len(full), where
        for index, (item, expected) in enumerate(zip(safe, full)):
            assert_same(item, expected, f"{where}[{index}]")
    else:
        assert safe == full or (safe != safe and full != full), where  # NaN equals NaN here


def assert_loads_weights_only(path: pathlib.Path) -> None:
    """The file holds tensors and plain types only (it cannot run code when opened), and a weights-only load gives
    exactly what full unpickling gives."""
    assert_same(torch.load(path, weights_only=True), torch.load(path, weights_only=False))


@pytest.mark.parametrize("script", SCRIPTS)
def test_qf_loss_is_the_loss_the_critic_optimiser_minimises(script, tmp_path, monkeypatch):
    """losses/qf_loss means one thing in every script: the value of the loss whose backward() updates the critic (the
    TD losses at the backbone's scale plus the method's critic terms), at the last gradient step before the log."""
    monkeypatch.chdir(tmp_path)
    minimised, expected = [], []
    backward, add_scalar = torch.Tensor.backward, SummaryWriter.add_scalar

    def recorded_backward(self, *args, **kwargs):
        if "inputs" not in kwargs:  # the critic's update (the actor's backward names the actor's parameters)
            minimised.append(self.item())
        return backward(self, *args, **kwargs)

    def recorded_add_scalar(self, tag, value, *args, **kwargs):
        if tag == "losses/qf_loss":
            expected.append(minimised[-1])
        return add_scalar(self, tag, value, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "backward", recorded_backward)
    monkeypatch.setattr(SummaryWriter, "add_scalar", recorded_add_scalar)
    schedule = {"train_freq": 10, "gradient_steps": 10} if script.startswith("sac") else {}
    _, run_dir = tiny_run(script, "Pendulum-v1", total_timesteps=150, eval_freq=0, save_model=False, log_freq=10,
                          hidden_sizes=(8, 8), **schedule)
    assert len(minimised) == 50  # one critic update per gradient step
    logged = [event.value for event in scalars(run_dir)["losses/qf_loss"]]
    assert len(logged) == len(expected) == 5
    assert logged == pytest.approx(expected, rel=1e-6)
