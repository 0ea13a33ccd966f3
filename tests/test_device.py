"""The update path of every script stays on the model's device and reads nothing back to the host outside logging.

Checked without a GPU by benchmark/measurements/update_path_check.py: inside the update block, a factory call without
device= gets the meta device, as a GPU run would give it the CPU, and every call's output device and every host read are recorded.
"""

import importlib.util
import pathlib

import pytest

from benchmark.measurements.update_path_check import run_checked
from tests.helpers import SCRIPTS

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "cleanrl_pave"
SETTINGS = dict(env_id="Pendulum-v1", total_timesteps=150, learning_starts=100, hidden_sizes=(32, 32), eval_freq=0,
                eval_episodes=1, log_freq=50, gradient_steps=5, run_name="device", compile=False, pave_compile=False)


@pytest.mark.parametrize("script", SCRIPTS)
def test_update_path_stays_on_the_model_device(script, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results, checker = run_checked(script, SETTINGS, "cpu", stand_in="meta")
    assert checker.report() == []
    assert checker.tensor_devices["cpu"] > 100, "the update block ran under the checker"
    assert results["global_step"] == 150 and (tmp_path / "runs/device/results.json").exists()


# (what is planted in td3_continuous.py, the finding it must give, whether the stand-in makes the run fail as on a GPU)
PLANTED = {
    "noise drawn without device=": (
        ('target_noise = torch.randn(data["actions"].shape, generator=torch_generator, device=device)',
         'target_noise = torch.randn(data["actions"].shape, generator=torch_generator)'),
        "no device: randn at td3_continuous.py:{line}", True),
    "a constant made on the default device": (
        ("return ((qf_a_values - next_q_value) ** 2).mean(1)",
         "return ((qf_a_values - next_q_value) ** 2).mean(1) + torch.zeros(2)"),
        "no device: zeros at td3_continuous.py:{line}", True),
    "fused Adam's found_inf on the default device": (
        ("        q_optimizer.step()\n",
         "        q_optimizer.found_inf = torch.tensor(0.0)\n        q_optimizer.step()\n"),
        "no device: tensor at td3_continuous.py:{line}", True),
    "a NumPy round trip": (
        ("qf_losses = critic_loss_fn(data, target_noise,",
         "qf_losses = critic_loss_fn(data, torch.from_numpy(target_noise.numpy()),"),
        "host read: numpy at td3_continuous.py:{line}", False),
    "a host sync outside logging": (
        ("qf_loss = qf_losses.sum()", "qf_loss = qf_losses.sum()\n        assert torch.isfinite(qf_loss)"),
        "host read: __bool__ at td3_continuous.py:{line}", False),
}


def planted_module(tmp_path: pathlib.Path, old: str, new: str):
    """td3_continuous with `old` replaced by `new`, imported from tmp_path; returns it and the planted line."""
    source = (PACKAGE / "td3_continuous.py").read_text()
    assert source.count(old) == 1
    planted = source.replace(old, new)
    line = next(number for number, (a, b) in enumerate(zip(source.splitlines(), planted.splitlines()), 1) if a != b)
    path = tmp_path / "planted" / "td3_continuous.py"
    path.parent.mkdir()
    path.write_text(planted)
    spec = importlib.util.spec_from_file_location("planted_td3_continuous", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, line


@pytest.mark.parametrize("name", PLANTED)
def test_a_planted_mismatch_is_found(name, tmp_path, monkeypatch):
    (old, new), finding, fails_on_a_gpu = PLANTED[name]
    monkeypatch.chdir(tmp_path)
    module, line = planted_module(tmp_path, old, new)
    # on the CPU alone the planted script runs: both devices are the CPU
    _, checker = run_checked(module, {**SETTINGS, "run_name": "cpu"}, "cpu")
    assert any(entry.startswith(finding.format(line=line)) for entry in checker.report()), checker.report()
    if fails_on_a_gpu:  # with the stand-in it fails as a GPU run would, and the finding says where
        with pytest.raises((RuntimeError, NotImplementedError)) as error:
            run_checked(module, {**SETTINGS, "run_name": "meta"}, "cpu", stand_in="meta")
        report = error.value.update_path_checker.report()
        assert any(entry.startswith(finding.format(line=line)) for entry in report), report
