"""critic_geometry: exact derivatives against closed forms and finite differences, the metrics, and the CLI."""

import json
import math
import pathlib
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cleanrl_pave.checkpointing import load_agent
from cleanrl_pave.critic_geometry import (
    METRIC_KEYS,
    action_gradient,
    action_hessian,
    critic_derivatives,
    geometry_metrics,
    main,
    mixed_hessian,
    negative_definite,
    spectral_norms,
)
from tests.helpers import train_tiny_runs

REPO = pathlib.Path(__file__).resolve().parents[1]

DTYPE = torch.float64


def quadratic_critic(weight, curvature, slope):
    """Q(s, a) = a^T W s - 0.5 a^T A a + b^T a, row by row."""
    def q(obs, actions):
        return (torch.einsum("bj,ji,bi->b", actions, weight, obs)
                - 0.5 * torch.einsum("bj,jk,bk->b", actions, curvature, actions) + actions @ slope)
    return q


def random_inputs(batch, obs_dim, act_dim, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, obs_dim, dtype=DTYPE, generator=generator),
            torch.rand(batch, act_dim, dtype=DTYPE, generator=generator) * 2 - 1)


def test_quadratic_critic_derivatives_are_exact():
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(3, 5, dtype=DTYPE, generator=generator)
    root = torch.randn(3, 3, dtype=DTYPE, generator=generator)
    curvature = root @ root.T + 0.1 * torch.eye(3, dtype=DTYPE)
    slope = torch.randn(3, dtype=DTYPE, generator=generator)
    q = quadratic_critic(weight, curvature, slope)
    obs, actions = random_inputs(7, 5, 3)

    assert torch.allclose(mixed_hessian(q, obs, actions), weight.expand(7, 3, 5), atol=1e-12)
    assert torch.allclose(action_hessian(q, obs, actions), -curvature.expand(7, 3, 3), atol=1e-12)
    assert torch.allclose(action_gradient(q, obs, actions), obs @ weight.T - actions @ curvature + slope, atol=1e-12)
    largest_singular_value = np.linalg.svd(weight.numpy(), compute_uv=False)[0]
    assert np.allclose(spectral_norms(mixed_hessian(q, obs, actions)).numpy(), largest_singular_value)
    metrics = geometry_metrics(q, lambda o: torch.tanh(o[:, :3]), [obs[:4], obs[4:]])
    assert metrics["M_sup"] == pytest.approx(largest_singular_value)
    assert metrics["M_mean"] == pytest.approx(largest_singular_value)
    assert metrics["ndef_rate"] == 1.0  # A is positive definite


@pytest.mark.parametrize("eigenvalues, definite", [((2.0, 0.5, 1.0), True), ((2.0, -0.5, 1.0), False),
                                                    ((2.0, 0.0, 1.0), False)])
def test_ndef_holds_iff_the_curvature_matrix_is_positive_definite(eigenvalues, definite):
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(2)))
    curvature = rotation @ torch.diag(torch.tensor(eigenvalues, dtype=DTYPE)) @ rotation.T
    q = quadratic_critic(torch.zeros(3, 4, dtype=DTYPE), curvature, torch.zeros(3, dtype=DTYPE))
    obs, actions = random_inputs(6, 4, 3)
    assert negative_definite(action_hessian(q, obs, actions)).tolist() == [definite] * 6


def test_ndef_and_trace_rates_by_hand():
    # Q = -0.5 s_0 |a|^2 with d_a = 2: d2Q/da2 = -s_0 I, so NDef iff s_0 > 0 and the trace -2 s_0 < -1 iff s_0 > 0.5
    def q(obs, actions):
        return -0.5 * obs[:, 0] * (actions**2).sum(-1)

    obs = torch.tensor([[-1.0, 0.0], [0.1, 0.0], [0.3, 0.0], [2.0, 0.0]], dtype=DTYPE)
    metrics = geometry_metrics(q, lambda o: torch.stack([o[:, 0], -o[:, 0]], -1), [obs])
    assert metrics["ndef_rate"] == 0.75
    assert metrics["trace_rate"] == 0.25


class SmallCritic(torch.nn.Module):
    def __init__(self, obs_dim, act_dim):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(obs_dim + act_dim, 16), torch.nn.SiLU(), torch.nn.Linear(16, 16),
                                       torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()

    def forward(self, obs, actions):
        return self.net(torch.cat([obs, actions], -1))  # (B, 1), which the library must accept


def test_mlp_derivatives_match_central_finite_differences():
    torch.manual_seed(3)
    critic = SmallCritic(4, 3)
    obs, actions = random_inputs(5, 4, 3)

    def first_order_gradient(o, a):
        a = a.clone().requires_grad_(True)
        return torch.autograd.grad(critic(o, a).sum(), a)[0]

    step = 1e-5
    mixed_by_fd = torch.stack([(first_order_gradient(obs + step * e, actions) - first_order_gradient(obs - step * e, actions))
                               / (2 * step) for e in torch.eye(4, dtype=DTYPE)], -1)  # (B, d_a, d_s)
    action_by_fd = torch.stack([(first_order_gradient(obs, actions + step * e)
                                 - first_order_gradient(obs, actions - step * e)) / (2 * step)
                                for e in torch.eye(3, dtype=DTYPE)], -1)
    gradient_by_fd = torch.stack([(critic(obs, actions + step * e) - critic(obs, actions - step * e))[:, 0] / (2 * step)
                                  for e in torch.eye(3, dtype=DTYPE)], -1)
    derivatives = critic_derivatives(critic, obs, actions, chunk_size=2)  # chunks of 2, 2, 1 rows
    assert torch.allclose(derivatives.mixed_hessian, mixed_by_fd, atol=1e-8)
    assert torch.allclose(derivatives.action_hessian, action_by_fd, atol=1e-8)
    assert torch.allclose(derivatives.action_gradient, gradient_by_fd, atol=1e-8)
    assert derivatives.mixed_hessian.abs().max() > 1e-3  # the check is not vacuous


def test_cosines_and_flips_on_a_known_gradient_field():
    # Q = a . (cos s_0, sin s_0): dQ/da is the unit vector at angle s_0, so consecutive cosines are cos(angle step);
    # the mixed Hessian [[-sin s_0, 0], [cos s_0, 0]] has spectral norm 1 and d2Q/da2 = 0
    def q(obs, actions):
        return actions[:, 0] * torch.cos(obs[:, 0]) + actions[:, 1] * torch.sin(obs[:, 0])

    def episode(angles):
        return torch.tensor([[angle, 0.0] for angle in angles], dtype=DTYPE)

    episodes = [episode([0.0, math.pi / 3, math.pi, 0.75 * math.pi]), episode([0.0, 0.1])]
    metrics = geometry_metrics(q, lambda o: torch.tanh(o), episodes)
    cosines = [0.5, -0.5, math.cos(math.pi / 4), math.cos(0.1)]  # none across the episode boundary
    assert metrics["cos_mean"] == pytest.approx(np.mean(cosines))
    assert metrics["flip_rate"] == pytest.approx(0.25)
    assert metrics["M_sup"] == pytest.approx(1.0) and metrics["M_mean"] == pytest.approx(1.0)
    assert metrics["ndef_rate"] == 0.0 and metrics["trace_rate"] == 0.0


def test_geometry_metrics_leaves_the_networks_untouched():
    torch.manual_seed(4)
    critic = SmallCritic(4, 2)
    actor = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Tanh()).double()
    before = [p.detach().clone() for p in [*critic.parameters(), *actor.parameters()]]
    with torch.no_grad():  # the scripts may call it from inside no_grad code
        metrics = geometry_metrics(critic, actor, [random_inputs(9, 4, 2)[0], random_inputs(3, 4, 2, seed=1)[0]])
    assert list(metrics) == list(METRIC_KEYS) and all(isinstance(value, float) for value in metrics.values())
    assert all(p.grad is None for p in [*critic.parameters(), *actor.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(before, [*critic.parameters(), *actor.parameters()]))


# ---------------------------------------------------------------------------------------- CLI on saved models


SCRIPTS = ["td3_continuous", "sac_continuous", "td3_pave_continuous", "sac_pave_continuous"]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Tiny Pendulum runs of the base and PAVE scripts, logging live geometry at their last step: {script: run dir}."""
    return train_tiny_runs(tmp_path_factory.mktemp("geometry_runs"), SCRIPTS, geometry_freq=300, cuda=False)


def test_cli_matches_an_independent_finite_difference_computation(tiny_runs, tmp_path):
    model = tiny_runs["td3_continuous"] / "td3_continuous.cleanrl_model"
    output = tmp_path / "out" / "geometry.json"
    main(["--model", str(model), "--episodes", "2", "--output", str(output)])
    result = json.loads(output.read_text())
    assert [p.name for p in output.parent.iterdir()] == ["geometry.json"]  # no temporary file left behind
    assert {"script": "td3_continuous", "env_id": "Pendulum-v1", "seed": 1, "rollout_seed": 10_001, "episodes": 2,
            "n_states": 400, "global_step": 300, "run_name": "td3_continuous"}.items() <= result.items()
    assert set(METRIC_KEYS) | {"time_s"} <= result.keys()

    # the same quantities from scratch: own rollouts (env action 2a on Pendulum), float64 critic, finite differences
    _, _, actor, qf, _ = load_agent(str(model))
    qf = qf.double()
    env = gym.make("Pendulum-v1")
    norms, curvatures, gradients_per_episode = [], [], []
    for episode in range(2):
        obs, _ = env.reset(seed=10_001 + episode)
        states, done = [], False
        while not done:
            states.append(obs)
            with torch.no_grad():
                action = actor(torch.as_tensor(obs)[None])[0].double().numpy()
            obs, _, terminated, truncated, _ = env.step(2.0 * action)
            done = terminated or truncated
        states = torch.as_tensor(np.asarray(states))
        with torch.no_grad():
            actions = actor(states).double()
            states = states.double()

            def q1(o, a):
                return qf(o, a)[0]

            step = 1e-3
            gradient = (q1(states, actions + step) - q1(states, actions - step)) / (2 * step)  # d_a = 1
            curvature = (q1(states, actions + step) - 2 * q1(states, actions) + q1(states, actions - step)) / step**2
            mixed = torch.stack([((q1(states + step * e, actions + step) - q1(states + step * e, actions - step))
                                  - (q1(states - step * e, actions + step) - q1(states - step * e, actions - step)))
                                 / (4 * step**2) for e in torch.eye(3, dtype=DTYPE)], -1)
        norms.append(mixed.norm(dim=-1))  # a 1 x 3 matrix: spectral norm = Euclidean norm
        curvatures.append(curvature)
        gradients_per_episode.append(gradient)
    norms, curvatures = torch.cat(norms), torch.cat(curvatures)
    cosines = torch.cat([torch.sign(g[1:] * g[:-1]) for g in gradients_per_episode])  # scalars: cosine = sign
    assert result["M_sup"] == pytest.approx(norms.max().item(), rel=1e-3)
    assert result["M_mean"] == pytest.approx(norms.mean().item(), rel=1e-3)
    assert result["ndef_rate"] == pytest.approx((curvatures < 0).double().mean().item(), abs=1 / 400)
    assert result["trace_rate"] == pytest.approx((curvatures < -1).double().mean().item(), abs=1 / 400)
    assert result["cos_mean"] == pytest.approx(cosines.mean().item(), abs=2 / 398)
    assert result["flip_rate"] == pytest.approx((cosines < 0).double().mean().item(), abs=2 / 398)


@pytest.mark.parametrize("script", SCRIPTS)
def test_cli_runs_on_models_and_checkpoints_of_any_script(tiny_runs, script, capsys):
    for path, global_step in ((tiny_runs[script] / f"{script}.cleanrl_model", 300),
                              (tiny_runs[script] / "checkpoint.pt", 200)):
        result = main(["--model", str(path), "--episodes", "1", "--seed", "5"])
        assert (result["script"], result["rollout_seed"], result["n_states"]) == (script, 5, 200)
        assert result["global_step"] == global_step
        assert 0 <= result["M_mean"] <= result["M_sup"] and math.isfinite(result["M_sup"])
        assert all(0.0 <= result[key] <= 1.0 for key in ("ndef_rate", "trace_rate", "flip_rate"))
        assert "M_sup" in capsys.readouterr().out


@pytest.mark.parametrize("script", SCRIPTS)
def test_live_geometry_logged_by_a_script_equals_the_cli_on_its_saved_model(tiny_runs, script):
    # the script logs geometry of its final critic on its final evaluation episode (seed + 10,000), as the CLI does
    accumulator = EventAccumulator(str(tiny_runs[script]), size_guidance={"scalars": 0})
    accumulator.Reload()
    result = main(["--model", str(tiny_runs[script] / f"{script}.cleanrl_model"), "--episodes", "1"])
    for key in METRIC_KEYS:
        (event,) = accumulator.Scalars(f"geometry/{key}")
        assert event.step == 300
        assert event.value == pytest.approx(result[key], rel=1e-5, abs=1e-6), key


def test_cli_refuses_a_directory_as_output_in_one_line_before_rolling_out(tiny_runs, tmp_path):
    script = next(iter(tiny_runs))
    done = subprocess.run([sys.executable, "-m", "cleanrl_pave.critic_geometry", "--model",
                           str(tiny_runs[script] / f"{script}.cleanrl_model"), "--output", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == (f"python -m cleanrl_pave.critic_geometry: error: --output "
                                                    f"{tmp_path} is a directory; give a file name, e.g. "
                                                    f"{tmp_path}/geometry.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module", ["cleanrl_pave.critic_geometry", "cleanrl_pave.evaluation"])
def test_cli_names_a_misspelt_flag_as_unknown_not_model_as_missing(module, tmp_path):
    done = subprocess.run([sys.executable, "-m", module, "--modle", str(tmp_path / "x.cleanrl_model")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == (f"python -m {module}: error: unrecognized arguments: --modle "
                                                    f"{tmp_path / 'x.cleanrl_model'}")
    missing = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].endswith("error: the following arguments are required: --model")
