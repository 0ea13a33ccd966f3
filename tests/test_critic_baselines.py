"""The critic-side baselines of README "Baselines": SN-Critic (spectral normalisation of the stacked twin critic) and
GP-Critic (a penalty on the critics' action gradient). Each is checked against an independent computation: torch's
own spectral_norm applied critic by critic, SVDs, finite differences and per-sample autograd loops."""

import copy
import importlib
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

REPO = pathlib.Path(__file__).resolve().parents[1]
SN_SCRIPTS = ["td3_sn_critic_continuous", "sac_sn_critic_continuous"]
GP_SCRIPTS = ["td3_gp_critic_continuous", "sac_gp_critic_continuous"]
PAPER_ENVS = ["Ant-v5", "Hopper-v5", "Humanoid-v5", "LunarLanderContinuous-v3", "Pendulum-v1", "Reacher-v5",
              "Walker2d-v5"]
OBS_DIM, ACT_DIM, HIDDEN = 5, 3, (24, 16)


def sn_critic(script: str, seed: int = 0, weight_scale: float = 3.0):
    """A spectrally normalised twin critic whose raw weights are scaled up, so every sigma is well above 1."""
    module = importlib.import_module(f"cleanrl_pave.{script}")
    torch.manual_seed(seed)
    qf = module.SpectralNormQNetwork(OBS_DIM, ACT_DIM, HIDDEN, "silu")
    with torch.no_grad():
        for weight in qf.weights:
            weight.mul_(weight_scale)
    return module, qf


@pytest.mark.parametrize("script", SN_SCRIPTS)
def test_spectral_norm_makes_every_layer_of_both_critics_1_lipschitz(script):
    _, qf = sn_critic(script)
    for _ in range(200):  # enough power iterations to converge on these small matrices
        qf.power_iteration_()
    raw_sigmas = [torch.linalg.svdvals(weight.detach())[:, 0] for weight in qf.weights]  # (2,) per layer
    assert min(sigma.min() for sigma in raw_sigmas) > 1.5  # the normalisation has work to do
    for weight, normalized, spectral_norm in zip(qf.weights, qf.layer_weights(), qf.spectral_norms):
        assert normalized.shape == weight.shape
        largest = torch.linalg.svdvals(normalized.detach())[:, 0]
        torch.testing.assert_close(largest, torch.ones(2), atol=1e-4, rtol=0)
        assert (largest <= 1 + 1e-4).all()
        torch.testing.assert_close(spectral_norm.sigma(weight).detach(), torch.linalg.svdvals(weight.detach())[:, 0],
                                   atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(qf.sigma_max(), torch.cat(raw_sigmas).max(), atol=1e-4, rtol=1e-4)


def torch_spectral_norm_critic(qf, critic: int) -> torch.nn.ModuleList:
    """Critic `critic` of the stack rebuilt as nn.Linear layers under torch's own spectral_norm parametrization, with
    our power-iteration vectors as its starting vectors (torch's layer weight is our (fan_in, fan_out) matrix
    transposed, so its u is our u and its v our v)."""
    layers = torch.nn.ModuleList()
    for weight, bias, spectral_norm in zip(qf.weights, qf.biases, qf.spectral_norms):
        layer = torch.nn.Linear(weight.shape[1], weight.shape[2])
        with torch.no_grad():
            layer.weight.copy_(weight[critic].T)
            layer.bias.copy_(bias[critic, 0])
        layer = torch.nn.utils.parametrizations.spectral_norm(layer)
        with torch.no_grad():
            layer.parametrizations.weight[0]._u.copy_(spectral_norm.u[critic])
            layer.parametrizations.weight[0]._v.copy_(spectral_norm.v[critic])
        layers.append(layer)
    return layers


@pytest.mark.parametrize("script", SN_SCRIPTS)
def test_stacked_spectral_norm_equals_torch_spectral_norm_per_critic(script):
    """One training step of the stacked network (a power iteration, then a forward) against torch's spectral_norm
    run independently on each critic (a training-mode forward does one power iteration): same vectors, same Q values
    and same gradients with respect to the raw weights."""
    _, qf = sn_critic(script, seed=1)
    references = [torch_spectral_norm_critic(qf, critic) for critic in range(2)]
    generator = torch.Generator().manual_seed(2)
    obs, actions = torch.randn(7, OBS_DIM, generator=generator), torch.rand(7, ACT_DIM, generator=generator) * 2 - 1

    qf.power_iteration_()
    q_values = qf(obs, actions)
    q_values.square().sum().backward()
    for critic, layers in enumerate(references):
        x = torch.cat([obs, actions], -1)
        for index, layer in enumerate(layers):
            x = layer(x)
            x = F.silu(x) if index < len(layers) - 1 else x
        torch.testing.assert_close(q_values[critic].detach(), x.squeeze(-1).detach())
        x.square().sum().backward()
        for weight, spectral_norm, layer in zip(qf.weights, qf.spectral_norms, layers):
            parametrization = layer.parametrizations.weight
            torch.testing.assert_close(spectral_norm.u[critic], parametrization[0]._u)
            torch.testing.assert_close(spectral_norm.v[critic], parametrization[0]._v)
            torch.testing.assert_close(weight.grad[critic], parametrization.original.grad.T)


@pytest.mark.parametrize("script", SN_SCRIPTS)
def test_spectral_norm_vectors_live_in_the_state_dict_and_forward_has_no_side_effects(script):
    module, qf = sn_critic(script)
    state = qf.state_dict()
    assert {f"spectral_norms.{index}.{name}" for index in range(3) for name in "uv"} <= state.keys()
    assert {name for name, _ in qf.named_parameters()} == {f"{kind}.{index}" for kind in ("weights", "biases")
                                                           for index in range(3)}  # Polyak averages weights only
    obs, actions = torch.randn(4, OBS_DIM), torch.rand(4, ACT_DIM)
    before = qf(obs, actions)
    torch.testing.assert_close(qf(obs, actions), before)  # reading Q does not advance the power iteration
    _, rebuilt = sn_critic(script, seed=5)  # other weights and vectors until the state dict is loaded
    rebuilt.load_state_dict(state)
    torch.testing.assert_close(rebuilt(obs, actions), before)
    torch.testing.assert_close(copy.deepcopy(qf)(obs, actions), before)
    args = module.Args(hidden_sizes=HIDDEN)
    assert isinstance(module.make_agent(args, OBS_DIM, ACT_DIM)[1], module.SpectralNormQNetwork)


@pytest.mark.parametrize("script", SN_SCRIPTS)
def test_sn_critic_target_normalises_its_own_polyak_weights(script, tmp_path, monkeypatch):
    """After training, the target's vectors estimate the top singular value of the TARGET's raw weights (its own
    power iteration), not the online critic's; checkpoints carry both sets of vectors."""
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"cleanrl_pave.{script}")
    module.main(module.Args(env_id="Pendulum-v1", total_timesteps=300, learning_starts=100, hidden_sizes=(32, 32),
                            eval_freq=0, eval_episodes=1, checkpoint_freq=250, run_name="sn", seed=1))
    checkpoint = torch.load(tmp_path / "runs/sn/checkpoint.pt", weights_only=False)
    assert checkpoint["global_step"] == 250
    online_weight, target_weight = checkpoint["qf"]["weights.0"], checkpoint["qf_target"]["weights.0"]
    assert not torch.allclose(online_weight, target_weight)
    for state in (checkpoint["qf"], checkpoint["qf_target"]):
        weight, u, v = state["weights.0"], state["spectral_norms.0.u"], state["spectral_norms.0.v"]
        estimate = torch.einsum("ci,cio,co->c", v, weight, u)
        torch.testing.assert_close(estimate, torch.linalg.svdvals(weight)[:, 0], rtol=1e-3, atol=1e-4)
    assert not torch.allclose(checkpoint["qf"]["spectral_norms.0.u"], checkpoint["qf_target"]["spectral_norms.0.u"])


def gp_setup(script: str, dtype=torch.float32):
    module = importlib.import_module(f"cleanrl_pave.{script}")
    torch.manual_seed(3)
    qf = module.QNetwork(OBS_DIM, ACT_DIM, HIDDEN, "silu").to(dtype)
    generator = torch.Generator().manual_seed(4)
    data = {"obs": torch.randn(6, OBS_DIM, generator=generator, dtype=dtype),
            "actions": (torch.rand(6, ACT_DIM, generator=generator, dtype=dtype) * 2 - 1)}
    return module, qf, data


@pytest.mark.parametrize("script", GP_SCRIPTS)
def test_gp_penalty_matches_finite_differences(script):
    module, qf, data = gp_setup(script, torch.float64)
    penalty = module.gp_critic_penalty(qf, data)
    step, total = 1e-6, 0.0
    with torch.no_grad():
        for critic in range(2):
            squared_norms = torch.zeros(len(data["obs"]), dtype=torch.float64)
            for dim in range(ACT_DIM):
                shift = torch.zeros(ACT_DIM, dtype=torch.float64)
                shift[dim] = step
                slope = (qf(data["obs"], data["actions"] + shift)[critic]
                         - qf(data["obs"], data["actions"] - shift)[critic]) / (2 * step)
                squared_norms += slope**2
            total += squared_norms.mean()
    torch.testing.assert_close(penalty, torch.as_tensor(total, dtype=torch.float64), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("script", GP_SCRIPTS)
def test_gp_penalty_and_its_parameter_gradients_match_a_per_sample_loop(script):
    module, qf, data = gp_setup(script)
    params = [*qf.weights, *qf.biases[:-1]]  # the output bias does not change dQ/da
    penalty = module.gp_critic_penalty(qf, data)
    batched_grads = torch.autograd.grad(penalty, params)

    loop_penalty = 0.0
    for critic in range(2):
        for sample in range(len(data["obs"])):
            action = data["actions"][sample : sample + 1].clone().requires_grad_(True)
            value = qf(data["obs"][sample : sample + 1], action)[critic].sum()
            (slope,) = torch.autograd.grad(value, action, create_graph=True)
            loop_penalty = loop_penalty + slope.square().sum() / len(data["obs"])
    loop_grads = torch.autograd.grad(loop_penalty, params)
    torch.testing.assert_close(penalty, loop_penalty)
    assert penalty > 0
    for batched, looped in zip(batched_grads, loop_grads):
        torch.testing.assert_close(batched, looped)
    assert all(grad.abs().sum() > 0 for grad in batched_grads)


@pytest.mark.parametrize("script", GP_SCRIPTS)
def test_gp_weight_defaults_per_env_and_flag_wins(script):
    module = importlib.import_module(f"cleanrl_pave.{script}")
    for env_id in [*PAPER_ENVS, "HalfCheetah-v5"]:
        assert module.resolve_gp_critic_args(module.Args(env_id=env_id)).lam_gp == 0.1
    assert module.resolve_gp_critic_args(module.Args(env_id="Pendulum-v1", lam_gp=0.7)).lam_gp == 0.7
    assert module.resolve_gp_critic_args(module.Args(env_id="Pendulum-v1", lam_gp=0.0)).lam_gp == 0.0
    assert module.Args().lam_gp is None  # resolved at run time, so the config records the value used


@pytest.mark.parametrize("script", GP_SCRIPTS)
def test_negative_gp_weight_is_a_one_line_error(script, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "cleanrl_pave" / f"{script}.py"), "--env-id", "Pendulum-v1",
                             "--lam-gp", "-1"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode != 0
    assert result.stderr.strip() == "error: --lam-gp must be non-negative, got -1.0"
    assert not (tmp_path / "runs").exists()
