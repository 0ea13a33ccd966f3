"""Foundation behaviour of the base scripts: paper defaults, determinism, the replay data, resume, bad input, W&B."""

import importlib
import json
import os
import pathlib
import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
import tyro

from cleanrl_pave import monitoring
from torch.utils.tensorboard import SummaryWriter

from tests.helpers import SCRIPTS, Zygote, scalars, tiny_run, wandb_offline_records

REPO = pathlib.Path(__file__).resolve().parents[1]
BASES = ["td3_continuous", "sac_continuous"]
TINY = ["--hidden-sizes", "32", "32", "--eval-episodes", "1"]


@pytest.fixture(scope="module")
def zygote():
    """Script processes forked from one interpreter with torch imported (tests/helpers.py: Zygote)."""
    forker = Zygote(REPO)
    yield forker
    forker.close()


def run_script(script: str, *flags: str, cwd, env=None, wait=True):
    command = [sys.executable, str(REPO / "cleanrl_pave" / f"{script}.py"), *flags]
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=environment, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script", BASES)
def test_paper_settings_are_defaults_and_flags_win(script):
    module = importlib.import_module(f"cleanrl_pave.{script}")
    pendulum = module.resolve_args(module.Args(env_id="Pendulum-v1"))
    assert pendulum.total_timesteps == 100_000
    assert (pendulum.gamma, pendulum.buffer_size) == ((0.98, 200_000) if script.startswith("td3") else (0.99, 1_000_000))
    walker = module.resolve_args(module.Args(env_id="Walker2d-v5"))
    assert (walker.total_timesteps, walker.gamma, walker.buffer_size) == (1_000_000, 0.99, 1_000_000)
    explicit = module.resolve_args(tyro.cli(module.Args, args=["--env-id", "Pendulum-v1", "--gamma", "0.9",
                                                               "--total-timesteps", "7"]))
    assert (explicit.gamma, explicit.total_timesteps) == (0.9, 7)
    backbone = module.Args()
    if script.startswith("td3"):
        assert (backbone.hidden_sizes, backbone.batch_size, backbone.policy_frequency) == ((400, 300), 256, 2)
    else:
        assert (backbone.hidden_sizes, backbone.batch_size, backbone.alpha) == ((256, 256), 100, 0.2)
        assert (backbone.train_freq, backbone.gradient_steps) == (50, 50)
    assert (backbone.learning_rate, backbone.tau, backbone.learning_starts, backbone.activation) == \
        (1e-3, 0.005, 10_000, "silu")


@pytest.mark.parametrize("script", BASES)
def test_same_seed_gives_identical_results(script, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"cleanrl_pave.{script}")

    def run(seed, name):
        args = module.Args(env_id="Pendulum-v1", total_timesteps=400, learning_starts=150, hidden_sizes=(32, 32),
                           eval_freq=200, eval_episodes=2, seed=seed, run_name=name, save_model=True)
        results = module.main(args)
        return results["eval"], results["eval_history"], torch.load(f"runs/{name}/{script}.cleanrl_model")["qf"]

    first, second, other = run(3, "a"), run(3, "b"), run(4, "c")
    assert first[0] == second[0] and first[1] == second[1]
    assert all(torch.equal(first[2][key], second[2][key]) for key in first[2])
    assert first[0]["episode_returns"] != other[0]["episode_returns"]


@pytest.mark.parametrize("script", ["td3_continuous", "td3_sn_critic_continuous"])
def test_td3_critics_are_independent_mlps_and_the_actor_loss_uses_q1_alone(script):
    """Each row of the stacked critic is its own MLP (checked layer by layer with F.linear); num_critics=1 gives Q1
    alone, and the TD3 actor-loss gradient through it equals the one through Q1 of the full stacked forward."""
    module = importlib.import_module(f"cleanrl_pave.{script}")
    torch.manual_seed(0)
    actor, qf = module.make_agent(module.Args(hidden_sizes=(16, 12)), 5, 2)
    actor, qf = actor.double(), qf.double()
    obs, actions = torch.randn(7, 5, dtype=torch.float64), torch.rand(7, 2, dtype=torch.float64) * 2 - 1
    weights = qf.layer_weights()  # the weights forward uses (SN-Critic: normalised)
    for critic in range(2):
        x = torch.cat([obs, actions], -1)
        for index, (weight, bias) in enumerate(zip(weights, qf.biases)):
            x = torch.nn.functional.linear(x, weight[critic].T, bias[critic, 0])
            x = torch.nn.functional.silu(x) if index < len(weights) - 1 else x
        torch.testing.assert_close(qf(obs, actions)[critic], x[:, 0], rtol=1e-12, atol=1e-12)
        if critic == 0:
            torch.testing.assert_close(qf(obs, actions, num_critics=1), x[:, 0][None], rtol=1e-12, atol=1e-12)
    gradients = []
    for q1 in (lambda a: qf(obs, a)[0], lambda a: qf(obs, a, num_critics=1)[0]):
        gradients.append(torch.autograd.grad(-q1(actor(obs)).mean(), list(actor.parameters())))
    for stacked, alone in zip(*gradients):
        torch.testing.assert_close(alone, stacked, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("env_id, to_env", [("Pendulum-v1", lambda a: 2.0 * a), ("Hopper-v5", lambda a: a)])
def test_replay_buffer_holds_true_transitions_with_termination_only_dones(env_id, to_env, tmp_path, zygote):
    # Warm-up only (random actions): replaying the stored actions in a fresh env must reproduce every stored
    # transition. Pendulum only truncates (all dones 0, the final obs is the true one); Hopper terminates.
    steps = 460
    returncode, _, stderr = zygote.run([REPO / "cleanrl_pave/td3_continuous.py", "--env-id", env_id,
                                        "--total-timesteps", str(steps + 1), "--learning-starts", str(steps + 1),
                                        "--checkpoint-freq", str(steps), "--eval-freq", "0", "--run-name", "replay",
                                        "--seed", "5", *TINY], tmp_path)
    assert returncode == 0, stderr
    buffer = torch.load(tmp_path / "runs/replay/checkpoint.pt", weights_only=False)["replay_buffer"]["storage"]
    obs_dim, act_dim = {"Pendulum-v1": (3, 1), "Hopper-v5": (11, 3)}[env_id]
    obs, actions = buffer[:, :obs_dim], buffer[:, obs_dim:obs_dim + act_dim]
    rewards, next_obs, dones = buffer[:, obs_dim + act_dim], buffer[:, -1 - obs_dim:-1], buffer[:, -1]
    assert actions.abs().max() <= 1.0
    env = gym.make(env_id)
    observation, _ = env.reset(seed=5)
    terminations = truncations = 0
    for t in range(steps):
        np.testing.assert_allclose(obs[t].numpy(), observation, rtol=1e-5, atol=1e-5)
        observation, reward, terminated, truncated, _ = env.step(to_env(actions[t].double().numpy()))
        np.testing.assert_allclose(next_obs[t].numpy(), observation, rtol=1e-5, atol=1e-5)
        assert rewards[t].item() == pytest.approx(reward, rel=1e-5, abs=1e-5)
        assert dones[t].item() == float(terminated)
        terminations, truncations = terminations + terminated, truncations + truncated
        if terminated or truncated:
            observation, _ = env.reset()
    assert (terminations > 0) if env_id == "Hopper-v5" else (truncations == 2 and terminations == 0)


def deliberate_differences() -> list[str]:
    """The numbered items of the README's "Deliberate differences from the release" section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Deliberate differences from the release\n")[1].split("\n## ")[0]
    items = []
    for line in section.splitlines():
        if line[:1].isdigit() and ". " in line[:4]:
            items.append(line.split(". ", 1)[1])
        elif items and line.startswith("   "):
            items[-1] += " " + line.strip()
    return items


@pytest.mark.parametrize("script", BASES)
def test_warm_up_actions_are_uniform_without_exploration_noise_as_documented(script, tmp_path, monkeypatch):
    """Warm-up actions are the script generator's uniform draws in [-1, 1], with no exploration noise added (SB3 adds
    TD3's to them and clips: a deliberate difference, so the README's list must say so)."""
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"cleanrl_pave.{script}")
    steps, seed = 120, 3
    module.main(module.Args(env_id="Pendulum-v1", total_timesteps=steps + 1, learning_starts=steps + 1,
                            checkpoint_freq=steps, eval_freq=0, eval_episodes=1, hidden_sizes=(8, 8), seed=seed,
                            run_name="warm"))
    storage = torch.load("runs/warm/checkpoint.pt", weights_only=False)["replay_buffer"]["storage"]
    generator = np.random.default_rng(seed)  # the scripts' numpy generator; warm-up draws nothing else from it
    expected = np.stack([generator.uniform(-1.0, 1.0, 1) for _ in range(steps)]).astype(np.float32)
    np.testing.assert_array_equal(storage[:, 3:4].numpy(), expected)  # the action column follows the 3 obs dims
    documented = [item for item in deliberate_differences() if "warm-up" in item.lower()]
    assert len(documented) == 1 and "exploration noise" in documented[0]


def test_resume_refuses_a_checkpoint_of_another_script_or_env(tmp_path, zygote):
    made, _, stderr = zygote.run([REPO / "cleanrl_pave/td3_continuous.py", "--env-id", "Pendulum-v1",
                                  "--total-timesteps", "301", "--learning-starts", "100", "--checkpoint-freq", "300",
                                  "--eval-freq", "0", "--run-name", "x", *TINY], tmp_path)
    assert made == 0, stderr
    for script, env_id, reason in (("sac_continuous", "Pendulum-v1", "td3_continuous.py"),
                                   ("td3_continuous", "MountainCarContinuous-v0", "Pendulum-v1")):
        refused, _, stderr = zygote.run([REPO / f"cleanrl_pave/{script}.py", "--env-id", env_id, "--resume",
                                         "--run-name", "x", *TINY], tmp_path)
        assert refused != 0
        assert "Traceback" not in stderr
        last_line = stderr.strip().splitlines()[-1]
        assert last_line.startswith("error:") and "refusing to resume" in last_line and reason in last_line


@pytest.mark.parametrize("flags, message", [
    (["--env-id", "NoSuchEnv-v0"], "unknown environment id"),
    (["--env-id", "CartPole-v1"], "Discrete action space"),
    (["--env-id", "Pendulum-v1", "--total-timesteps", "0"], "--total-timesteps must be positive"),
    (["--env-id", "Pendulum-v1", "--total-timesteps", "-5"], "--total-timesteps must be positive"),
    (["--env-id", "Pendulum-v1", "--eval-episodes", "0"], "--eval-episodes must be positive"),
    (["--env-id", "Pendulum-v1", "--eval-freq", "-1"], "--eval-freq must be non-negative"),
    (["--env-id", "Pendulum-v1", "--learning-rate", "-0.001"], "--learning-rate must be positive, got -0.001"),
    (["--env-id", "Pendulum-v1", "--buffer-size", "10"], "--buffer-size (10) must hold at least one batch"),
])
@pytest.mark.parametrize("script", BASES)
def test_bad_input_gives_a_one_line_error(script, flags, message, tmp_path, zygote):
    """Rejected before anything is printed or written: no configuration dump before the error, no run directory."""
    returncode, stdout, stderr = zygote.run([REPO / "cleanrl_pave" / f"{script}.py", *flags], tmp_path)
    assert returncode != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert stdout == ""
    assert not (tmp_path / "runs").exists()


# a method's own flags, one or two per method family (each script checks its weights in its resolve_*_args, tested
# in-process in the method's test module); as a user sees it on the command line
@pytest.mark.parametrize("script, flags, message", [
    ("td3_pave_continuous", ["--lam-mpr", "-0.5"], "error: --lam-mpr must be a finite non-negative number, got -0.5"),
    ("sac_pave_continuous", ["--lam-curv", "-0.5"], "error: --lam-curv must be a finite non-negative number, got -0.5"),
    ("td3_caps_continuous", ["--lam-t", "-1"], "error: --lam-t must be non-negative, got -1.0"),
    ("sac_asap_continuous", ["--lam-p", "-1"], "error: --lam-p must be non-negative, got -1.0"),
    ("sac_l2c2_continuous", ["--l2c2-beta", "-1"], "error: --l2c2-beta must be non-negative, got -1.0"),
    ("td3_lipsnet_continuous", ["--lam-k", "-1"], "error: --lam-k must be non-negative, got -1.0"),
    ("td3_grad_continuous", ["--lam-t", "nan"], "error: --lam-t must be non-negative, got nan"),  # NaN is not >= 0
])
def test_a_method_weight_out_of_range_is_a_one_line_error(script, flags, message, tmp_path, zygote):
    returncode, stdout, stderr = zygote.run([REPO / "cleanrl_pave" / f"{script}.py", "--env-id", "Pendulum-v1",
                                             *flags], tmp_path)
    assert returncode != 0 and stdout == ""
    assert stderr.strip().splitlines() == [message]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("module, flags, extra", [
    ("Box2D", ["--env-id", "LunarLanderContinuous-v3"], "box2d"),
    ("moviepy", ["--env-id", "Pendulum-v1", "--capture-video"], "video"),
])
def test_missing_optional_dependency_names_the_extra(module, flags, extra, tmp_path):
    # a module that fails to import stands in for a machine without the extra
    fake = tmp_path / "missing"
    (fake / module).mkdir(parents=True)
    (fake / module / "__init__.py").write_text(f"raise ImportError('{module} is not installed')\n")
    result = run_script("td3_continuous", *flags, cwd=tmp_path, env={"PYTHONPATH": f"{fake}{os.pathsep}{REPO}"})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'cleanrl_pave[{extra}]'" in lines[0]


def test_importing_a_script_does_not_train(tmp_path):
    result = subprocess.run([sys.executable, "-c", "import cleanrl_pave.td3_continuous, cleanrl_pave.sac_continuous"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and not (tmp_path / "runs").exists()


def test_wandb_offline_tracking_uploads_the_videos(tmp_path):
    # wandb's monitor_gym patch broke gymnasium 1.x's RecordVideo (exit 1 at env.close()); the scripts log the files
    result = run_script("td3_continuous", "--env-id", "Pendulum-v1", "--total-timesteps", "450", "--learning-starts",
                        "100", "--eval-freq", "0", "--run-name", "tracked", "--track", "--wandb-group", "tests",
                        "--capture-video", *TINY, cwd=tmp_path,
                        env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true",
                             "XDG_RUNTIME_DIR": ""})  # as on a machine without a desktop session
    assert result.returncode == 0, result.stderr
    assert "XDG_RUNTIME_DIR" not in result.stdout + result.stderr  # SDL's complaint, which reads like our errors
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "the offline run holds no W&B data file"
    assert (tmp_path / "runs/tracked/results.json").exists()
    recorded = sorted((tmp_path / "videos/tracked").glob("*.mp4"))  # episodes 0 and 1 (RecordVideo's schedule)
    uploaded = sorted((runs[0] / "files/media/videos").glob("*.mp4"))
    assert len(recorded) == 2 and len(uploaded) == len(recorded)
    assert sorted(path.stat().st_size for path in uploaded) == sorted(path.stat().st_size for path in recorded)


def test_wandb_runs_chart_against_env_steps_and_group_each_cells_seeds(tmp_path):
    """Without --wandb-group a run joins the group of its (env, method) cell, tagged with both, declares global_step
    (the env step) as every chart's step metric, and logs the resolved configuration."""
    result = run_script("td3_continuous", "--env-id", "Pendulum-v1", "--total-timesteps", "150", "--learning-starts",
                        "100", "--eval-freq", "0", "--track", *TINY, cwd=tmp_path,
                        env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"})
    assert result.returncode == 0, result.stderr
    [run_dir] = list((tmp_path / "wandb").glob("offline-run-*"))
    records = wandb_offline_records(run_dir)
    run = next(record.run for record in records if record.WhichOneof("record_type") == "run")
    assert run.run_group == "Pendulum-v1__td3_continuous"
    assert {"Pendulum-v1", "td3_continuous"} <= set(run.tags)
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    [run_name] = [path.name for path in (tmp_path / "runs").iterdir()]
    assert config["run_name"] == run_name and config["cuda"] is (torch.cuda.is_available())
    metrics = [record.metric for record in records if record.WhichOneof("record_type") == "metric"]
    assert any(metric.glob_name == "*" and metric.step_metric == "global_step" for metric in metrics)


def test_progress_lines_and_charts_sps_measure_the_learning_phase(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(monitoring, "ETA_MIN_S", 0.0)  # this short run's ETA clock never reaches 30 s
    module = importlib.import_module("cleanrl_pave.td3_continuous")
    learning_starts, total = 2000, 2600
    module.main(module.Args(env_id="Pendulum-v1", total_timesteps=total, learning_starts=learning_starts,
                            hidden_sizes=(32, 32), eval_freq=0, eval_episodes=1, run_name="progress",
                            progress_interval=1e-6))  # a line at every clock check: the warm-up gets lines too
    lines = capsys.readouterr().out.splitlines()
    learning = [line for line in lines if re.fullmatch(
        r"step (\d+)/2600 \(\d+\.\d%\)  SPS \d+ \(last \d+s\)  ETA \d+s  train return -?\d+\.\d", line)]
    assert learning, "no learning-phase progress line with an ETA:\n" + "\n".join(lines)
    assert any(line.startswith("step ") and "warm-up SPS" in line for line in lines)
    assert lines[-1].startswith("done in ") and \
        lines[-1].endswith(": run directory runs/progress, results runs/progress/results.json")
    # charts/SPS against the event files' own clock: steps since learning started over the seconds since then
    # (the episode that ends at step 2000 is logged when learning starts); a run-long average counts the warm-up
    logged = scalars(tmp_path / "runs/progress")
    learning_started = next(event.wall_time for event in logged["charts/episodic_return"]
                            if event.step == learning_starts)
    sps = logged["charts/SPS"]
    assert [event.step for event in sps] == list(range(learning_starts + 100, total + 1, 100))
    for event in sps:
        measured = (event.step - learning_starts) / (event.wall_time - learning_started)
        assert event.value == pytest.approx(measured, rel=0.1), (event.step, event.value, measured)


@pytest.mark.parametrize("script", BASES)
def test_a_non_finite_loss_stops_the_run_with_one_line_and_a_resumable_checkpoint(script, tmp_path, monkeypatch):
    """--gamma 1e38 makes the TD targets ~1e38, so the squared errors overflow to inf: those critic updates are skipped
    (found_inf), the run stops at the logging interval naming the losses, and its checkpoint holds finite networks
    that a resume with the paper's gamma trains to the end."""
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"cleanrl_pave.{script}")
    settings = dict(env_id="Pendulum-v1", total_timesteps=400, learning_starts=100, hidden_sizes=(32, 32),
                    eval_freq=0, eval_episodes=1, run_name="diverged", seed=1)
    with pytest.raises(SystemExit) as stop:
        module.main(module.Args(**settings, gamma=1e38))
    message = str(stop.value)
    assert len(message.splitlines()) == 1
    assert message.startswith("error: non-finite loss (losses/qf1_loss, losses/qf2_loss, losses/qf_loss) in an update")
    assert "between steps 101 and 200" in message and "runs/diverged/checkpoint.pt" in message
    checkpoint = torch.load(tmp_path / "runs/diverged/checkpoint.pt", weights_only=False)
    assert checkpoint["global_step"] == 200
    for network in ("actor", "qf"):
        assert all(torch.isfinite(value).all() for value in checkpoint[network].values()), network
    results = module.main(module.Args(**settings, resume=True))
    assert results["global_step"] == 400 and np.isfinite(results["eval"]["episode_returns"]).all()


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
