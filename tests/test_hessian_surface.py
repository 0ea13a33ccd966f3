"""plots/hessian_surface.py: the dominant pair, the grid values and layout, the reference rule, and the figure files."""

import json
import os

import gymnasium as gym
import numpy as np
import pytest
import torch

from cleanrl_pave import td3_continuous
from cleanrl_pave.checkpointing import load_agent
from plots.hessian_surface import (
    REFERENCE_STEP,
    ReferencePoint,
    Surface,
    dominant_pair,
    env_surfaces,
    hessian_surface,
    main,
    z_clip,
)

DTYPE = torch.float64


def test_dominant_pair_is_the_largest_absolute_mixed_partial_over_the_batch():
    # Q = a^T W s + a_1 s_2^2: d2Q/da_1 ds_2 = W[1, 2] + 2 s_2, which beats every |W| entry only at the third state
    weight = torch.tensor([[0.3, -0.2, 0.1, 0.0], [0.5, 0.2, 0.0, -0.9]], dtype=DTYPE)

    def q(obs, actions):
        return torch.einsum("bj,ji,bi->b", actions, weight, obs) + actions[:, 1] * obs[:, 2] ** 2

    obs = torch.zeros(4, 4, dtype=DTYPE)
    obs[2, 2] = 3.0
    assert dominant_pair(q, obs, torch.zeros(4, 2, dtype=DTYPE)) == (2, 1)
    assert dominant_pair(q, obs[[0, 1, 3]], torch.zeros(3, 2, dtype=DTYPE)) == (3, 1)  # |-0.9| wins without it


def test_surface_values_and_axes_match_the_closed_form():
    # Q = a_0 sin(s_1) + 0.5 a_0^2 s_1: the only mixed partial is d2Q/da_0 ds_1 = cos(s_1) + a_0
    calls = []

    def q(obs, actions):
        calls.append(len(obs))
        return actions[:, 0] * torch.sin(obs[:, 1]) + 0.5 * actions[:, 0] ** 2 * obs[:, 1]

    reference = ReferencePoint(state_dim=1, action_dim=0, obs=torch.tensor([0.4, -0.3, 2.0], dtype=DTYPE),
                               action=torch.tensor([0.2, -0.5], dtype=DTYPE), step=0)
    surface = hessian_surface(q, reference, "test")
    assert calls == [2500]  # the whole grid in one batched call
    assert np.allclose(surface.state_values, -0.3 + np.linspace(-1.0, 1.0, 50))
    assert np.allclose(surface.action_values, 0.2 + np.linspace(-1.5, 1.5, 50))
    expected = np.abs(np.cos(surface.state_values)[None, :] + surface.action_values[:, None])
    assert surface.norms.shape == (50, 50) and np.allclose(surface.norms, expected, atol=1e-12)


def test_z_clip_is_the_base_99th_percentile():
    norms = np.arange(2500, dtype=float).reshape(50, 50)
    base = Surface("base", np.zeros(50), np.zeros(50), norms, np.zeros(1))
    assert z_clip(base) == pytest.approx(np.percentile(np.arange(2500), 99))
    assert z_clip(Surface("relu", np.zeros(50), np.zeros(50), np.zeros((50, 50)), np.zeros(1))) == 1.0


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two critics of one tiny Pendulum TD3 run: its step-200 checkpoint and its final (step-300) model."""
    root = tmp_path_factory.mktemp("surface_runs")
    previous_dir = os.getcwd()
    os.chdir(root)
    try:
        td3_continuous.main(td3_continuous.Args(
            env_id="Pendulum-v1", total_timesteps=300, learning_starts=100, hidden_sizes=(32, 32), eval_freq=0,
            eval_episodes=1, checkpoint_freq=200, save_model=True, run_name="Pendulum-v1__tiny", cuda=False))
    finally:
        os.chdir(previous_dir)
    run_dir = root / "runs" / "Pendulum-v1__tiny"
    return run_dir / "checkpoint.pt", run_dir / "td3_continuous.cleanrl_model"


def test_renders_png_pdf_and_json_from_two_checkpoints(two_models, tmp_path):
    base, late = two_models
    out = tmp_path / "figs" / "pendulum_surface"
    written = main(["--env", "Pendulum-v1", "--models", f"base={base}", f"late={late}", "--out", str(out)])
    assert written == [f"{out}.png", f"{out}.pdf"]
    assert (tmp_path / "figs" / "pendulum_surface.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "figs" / "pendulum_surface.pdf").read_bytes()[:4] == b"%PDF"
    record = json.loads((tmp_path / "figs" / "pendulum_surface.json").read_text())["Pendulum-v1"]
    assert list(record["methods"]) == ["base", "late"]
    assert record["action_dim"] == 0 and record["state_dim"] in (0, 1, 2)

    # the documented reference rule, replayed by hand: Base policy, env reset with seed 0, state at step 100
    _, _, actor, _, _ = load_agent(str(base))
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=0)
    for _ in range(REFERENCE_STEP):
        with torch.no_grad():
            action = actor(torch.as_tensor(obs)[None])[0].double().numpy()
        obs, *_ = env.step(2.0 * action)
    assert record["reference_step"] == REFERENCE_STEP
    assert np.allclose(record["reference_obs"], obs, atol=1e-6)
    with torch.no_grad():
        assert np.allclose(record["reference_action"], actor(torch.as_tensor(obs)[None])[0].numpy(), atol=1e-6)
    assert record["z_clip"] <= record["methods"]["base"]["max"]
    assert np.allclose(record["methods"]["base"]["centre_action"], record["reference_action"])


def test_each_panel_is_centred_on_its_own_policy_action(two_models):
    """As the release (td3/tests/viz_hessian_autograd.py:53-56), each method's grid is centred on that method's own
    action at the reference state; the reference state and the (state dim, action dim) pair stay the Base's."""
    base, late = two_models
    reference, surfaces = env_surfaces("Pendulum-v1", {"base": str(base), "late": str(late)})
    own_actions = []
    for path, surface in zip((base, late), surfaces):
        _, _, actor, qf, _ = load_agent(str(path))
        with torch.no_grad():
            own_action = actor(reference.obs[None])[0]
        own_actions.append(own_action)
        assert np.allclose(surface.centre_action, own_action.numpy())
        assert np.allclose(surface.action_values, own_action[reference.action_dim].item() + np.linspace(-1.5, 1.5, 50))
        assert np.allclose(surface.state_values, reference.obs[reference.state_dim].item() + np.linspace(-1, 1, 50))
        # one grid point, recomputed by autograd at (s_ref with s_i swept, own action with a_j swept)
        obs = reference.obs.clone().double()
        obs[reference.state_dim] = float(surface.state_values[7])
        action = own_action.clone().double()
        action[reference.action_dim] = float(surface.action_values[31])
        qf = qf.double()
        mixed = torch.autograd.functional.jacobian(lambda s: torch.autograd.functional.jacobian(
            lambda a: qf(s[None], a[None])[0, 0], action, create_graph=True), obs)  # (d_a, d_s)
        assert surface.norms[31, 7] == pytest.approx(torch.linalg.matrix_norm(mixed, ord=2).item(), rel=1e-4)
    assert torch.equal(own_actions[0], reference.action)
    assert (own_actions[1] - own_actions[0]).abs().max() > 1e-3, "the two policies should act differently"


def test_grid_mode_fills_env_into_glob_paths(two_models, tmp_path):
    runs_dir = two_models[0].parent.parent
    out = tmp_path / "grid.png"  # an extension is dropped: both formats are always written
    main(["--grid", "Pendulum-v1", "--models", f"base={runs_dir}/{{env}}__*/checkpoint.pt",
          f"late={runs_dir}/{{env}}__*/*.cleanrl_model", "--out", str(out)])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["grid.json", "grid.pdf", "grid.png"]
    with pytest.raises(SystemExit, match="matches 0 files"):
        main(["--grid", "Hopper-v5", "--models", f"base={runs_dir}/{{env}}__*/checkpoint.pt", "--out", str(out)])
