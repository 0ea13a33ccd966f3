"""L2C2 and LipsNet variants (TD3 and SAC): each loss against an independent computation (explicit per-sample loops,
numerical integration, autograd Jacobians, finite differences) on fixed inputs and noise, values and gradients; the
L2C2 weights against a hand computation; LipsNet's Jacobian, output bound and local Lipschitz bound; defaults, flags
and one-line errors."""

import importlib
import pathlib

import numpy as np
import pytest
import torch

from cleanrl_pave import sac_l2c2_continuous as sac_l2c2
from cleanrl_pave import sac_lipsnet_continuous as sac_lipsnet
from cleanrl_pave import td3_l2c2_continuous as td3_l2c2
from cleanrl_pave import td3_lipsnet_continuous as td3_lipsnet

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "cleanrl_pave"
L2C2_MODULES = [td3_l2c2, sac_l2c2]
LIPSNET_MODULES = [td3_lipsnet, sac_lipsnet]
LIPSNET_SCRIPTS = ["td3_lipsnet_continuous", "sac_lipsnet_continuous", "td3_pave_lipsnet_continuous",
                   "sac_pave_lipsnet_continuous"]
OBS_DIM, ACT_DIM, BATCH = 3, 2, 5


def module_id(module) -> str:
    return module.__name__.rsplit(".", 1)[-1]


def random_batch(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(BATCH, OBS_DIM, generator=generator, dtype=torch.float64)
    return {"obs": obs, "next_obs": obs + 0.5 * torch.randn(BATCH, OBS_DIM, generator=generator, dtype=torch.float64),
            "actions": torch.rand(BATCH, ACT_DIM, generator=generator, dtype=torch.float64) * 2 - 1}


def unit_noise(seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(BATCH, OBS_DIM, generator=generator, dtype=torch.float64) * 2 - 1


def gradients(loss: torch.Tensor, module: torch.nn.Module) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(module.parameters()), allow_unused=False))


def assert_same_gradients(first: list[torch.Tensor], second: list[torch.Tensor]) -> None:
    for grad_a, grad_b in zip(first, second, strict=True):
        torch.testing.assert_close(grad_a, grad_b, rtol=1e-7, atol=1e-10)


# ---------------------------------------------------------------------------------------------------------- L2C2


@pytest.mark.parametrize("module", L2C2_MODULES, ids=module_id)
def test_l2c2_weights_match_hand_computation(module):
    # sigma 1, lambda_D 0.1, lambda_U 10: eps_L = 0.1 / 9.9 = 1/99 and w = 1, so u = unit noise
    data = {"obs": torch.tensor([[0.0, 0.0], [1.0, -1.0]], dtype=torch.float64),
            "next_obs": torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64)}  # sample 2 stays put in dim 2
    l2c2 = module.l2c2_interpolation(data, torch.tensor([[0.5, -0.25], [-1.0, 0.7]], dtype=torch.float64),
                                     sigma=1.0, lambda_d=0.1, lambda_u=10.0, beta=0.1)
    # sample 1: s_bar = (0.5, -0.5), d = max(0.5/1, 0.5/2) + 1/99; lambda_pi = (10/99) / d = 10/50.5,
    # lambda_V = 0.1 lambda_pi / d = 99/50.5^2. sample 2: s_bar = (-1, -1), d = max(2/2, 0) + 1/99 = 100/99;
    # lambda_pi = 0.1, lambda_V = 0.0099
    torch.testing.assert_close(l2c2["obs_bar"], torch.tensor([[0.5, -0.5], [-1.0, -1.0]], dtype=torch.float64))
    torch.testing.assert_close(l2c2["policy_weight"], torch.tensor([10 / 50.5, 0.1], dtype=torch.float64), rtol=1e-7,
                               atol=0)
    torch.testing.assert_close(l2c2["value_weight"], torch.tensor([99 / 50.5**2, 0.0099], dtype=torch.float64),
                               rtol=1e-7, atol=0)

    # sigma 0.5, lambda_D 1, lambda_U 100, beta 0.2: eps_L = 0.5/99.5 = 1/199, w = 0.5 - 0.5/199 = 99/199;
    # unit noise 0.5 -> u = 99/398 = d - eps_L, so d = 101/398, lambda_pi = (100/199) / d = 200/101,
    # lambda_V = 0.2 lambda_pi / d = 15920/10201
    data = {"obs": torch.tensor([[1.0]], dtype=torch.float64), "next_obs": torch.tensor([[5.0]], dtype=torch.float64)}
    l2c2 = module.l2c2_interpolation(data, torch.tensor([[0.5]], dtype=torch.float64), sigma=0.5, lambda_d=1.0,
                                     lambda_u=100.0, beta=0.2)
    torch.testing.assert_close(l2c2["obs_bar"], torch.tensor([[1.0 + 4 * 99 / 398]], dtype=torch.float64))
    torch.testing.assert_close(l2c2["policy_weight"], torch.tensor([200 / 101], dtype=torch.float64), rtol=1e-7, atol=0)
    torch.testing.assert_close(l2c2["value_weight"], torch.tensor([15920 / 10201], dtype=torch.float64), rtol=1e-7,
                               atol=0)


@pytest.mark.parametrize("module", L2C2_MODULES, ids=module_id)
def test_l2c2_interpolation_spans_s_plus_minus_step_for_sigma_one(module):
    data = random_batch()
    step = data["next_obs"] - data["obs"]
    for noise, expected in ((1.0, data["next_obs"]), (-1.0, data["obs"] - step), (0.0, data["obs"])):
        l2c2 = module.l2c2_interpolation(data, torch.full_like(data["obs"], noise), 1.0, 0.1, 10.0, 0.1)
        torch.testing.assert_close(l2c2["obs_bar"], expected)
    l2c2 = module.l2c2_interpolation(data, unit_noise(), 1.0, 0.1, 10.0, 0.1)
    assert not l2c2["policy_weight"].requires_grad and not l2c2["value_weight"].requires_grad  # weights are sg
    assert (l2c2["policy_weight"] > 0).all() and (l2c2["value_weight"] > 0).all()


def l2c2_weights_by_loop(data: dict, noise: torch.Tensor, sigma, lambda_d, lambda_u, beta):
    """The L2C2 interpolation and weights, one sample and one state dim at a time in plain Python floats."""
    eps_l = sigma * lambda_d / (lambda_u - sigma * lambda_d)
    width = sigma + (sigma - 1) * eps_l
    obs_bar, policy_weights, value_weights = [], [], []
    for obs, next_obs, row in zip(data["obs"].tolist(), data["next_obs"].tolist(), noise.tolist()):
        bar = [s + (s_next - s) * width * n for s, s_next, n in zip(obs, next_obs, row)]
        d = max(abs((b - s) / (s_next - s + 1e-8)) for b, s, s_next in zip(bar, obs, next_obs)) + eps_l
        obs_bar.append(bar)
        policy_weights.append(eps_l * lambda_u / d)
        value_weights.append(beta * policy_weights[-1] / d)
    return torch.tensor(obs_bar, dtype=torch.float64), policy_weights, value_weights


@pytest.mark.parametrize("module", L2C2_MODULES, ids=module_id)
def test_l2c2_value_loss_matches_per_sample_loop(module):
    torch.manual_seed(0)
    qf = module.QNetwork(OBS_DIM, ACT_DIM, (16, 16), "silu").double()
    data, noise = random_batch(), unit_noise()
    settings = (1.0, 1.0, 100.0, 0.1)
    loss = module.l2c2_value_loss(qf, data, module.l2c2_interpolation(data, noise, *settings))

    obs_bar, _, value_weights = l2c2_weights_by_loop(data, noise, *settings)
    expected = 0.0
    for i in range(BATCH):
        action = data["actions"][i:i + 1]
        q_obs, q_bar = qf(data["obs"][i:i + 1], action)[:, 0], qf(obs_bar[i:i + 1], action)[:, 0]
        expected = expected + value_weights[i] * 0.5 * torch.abs(torch.min(q_obs) - torch.min(q_bar))
    expected = expected / BATCH
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=0)
    assert_same_gradients(gradients(loss, qf), gradients(expected, qf))


def test_td3_l2c2_policy_loss_matches_per_sample_loop():
    torch.manual_seed(0)
    actor = td3_l2c2.Actor(OBS_DIM, ACT_DIM, (16, 16), "silu").double()
    data, noise = random_batch(), unit_noise()
    settings = (1.0, 0.1, 10.0, 0.1)
    loss = td3_l2c2.l2c2_policy_loss(actor, data, td3_l2c2.l2c2_interpolation(data, noise, *settings))

    obs_bar, policy_weights, _ = l2c2_weights_by_loop(data, noise, *settings)
    expected = 0.0
    for i in range(BATCH):
        action, action_bar = actor(data["obs"][i]), actor(obs_bar[i])
        squared_distance = sum((action[j] - action_bar[j]) ** 2 for j in range(ACT_DIM))
        expected = expected + policy_weights[i] * squared_distance / 2
    expected = expected / BATCH
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=0)
    assert_same_gradients(gradients(loss, actor), gradients(expected, actor))


def hellinger_by_integration(mean, std, mean_bar, std_bar) -> torch.Tensor:
    """1 - prod_i int sqrt(p_i(x) q_i(x)) dx of two diagonal Gaussians, by the trapezoid rule on a fine grid."""
    grid = torch.linspace(-15.0, 15.0, 30_001, dtype=torch.float64)
    coefficient = 1.0
    for m, s, m_bar, s_bar in zip(mean, std, mean_bar, std_bar):
        density = torch.exp(-0.5 * ((grid - m) / s) ** 2) / (s * np.sqrt(2 * np.pi))
        density_bar = torch.exp(-0.5 * ((grid - m_bar) / s_bar) ** 2) / (s_bar * np.sqrt(2 * np.pi))
        coefficient = coefficient * torch.trapezoid(torch.sqrt(density * density_bar), grid)
    return 1.0 - coefficient


def test_sac_l2c2_policy_loss_matches_numerically_integrated_hellinger():
    torch.manual_seed(0)
    actor = sac_l2c2.Actor(OBS_DIM, ACT_DIM, (16, 16), "silu").double()
    data, noise = random_batch(), unit_noise()
    data["next_obs"] = data["obs"] + 10.0 * (data["next_obs"] - data["obs"])  # larger steps: H^2 well above 0
    settings = (1.0, 0.1, 10.0, 0.1)
    loss = sac_l2c2.l2c2_policy_loss(actor, data, sac_l2c2.l2c2_interpolation(data, noise, *settings))

    obs_bar, policy_weights, _ = l2c2_weights_by_loop(data, noise, *settings)
    expected, distances = 0.0, []
    for i in range(BATCH):
        mean, log_std = actor(data["obs"][i:i + 1])
        mean_bar, log_std_bar = actor(obs_bar[i:i + 1])
        distances.append(hellinger_by_integration(mean[0], log_std[0].exp(), mean_bar[0], log_std_bar[0].exp()))
        expected = expected + policy_weights[i] * distances[-1]
    expected = expected / BATCH
    assert min(distances) > 1e-4  # the check is not vacuous
    torch.testing.assert_close(loss, expected, rtol=1e-8, atol=0)
    for grad, expected_grad in zip(gradients(loss, actor), gradients(expected, actor), strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-12)


def test_squared_hellinger_is_that_of_the_tanh_squashed_policies():
    """Integrated in the action space [-1, 1], with the squashed densities p(y) = N(atanh y) / (1 - y^2)."""
    mean, log_std = torch.tensor([0.3, -0.8], dtype=torch.float64), torch.tensor([-0.2, 0.1], dtype=torch.float64)
    mean_bar = torch.tensor([-0.4, -0.5], dtype=torch.float64)
    log_std_bar = torch.tensor([0.0, -0.6], dtype=torch.float64)
    closed_form = sac_l2c2.squared_hellinger(mean[None], log_std[None], mean_bar[None], log_std_bar[None])[0]
    # y = tanh(x) on a grid uniform in x (dense near +-1 in y), integrated in y
    y = torch.tanh(torch.linspace(-12.0, 12.0, 200_001, dtype=torch.float64))
    coefficient = 1.0
    for m, s, m_bar, s_bar in zip(mean, log_std.exp(), mean_bar, log_std_bar.exp()):
        pre_tanh, jacobian = torch.atanh(y), 1.0 - y**2
        density = torch.exp(-0.5 * ((pre_tanh - m) / s) ** 2) / (s * np.sqrt(2 * np.pi)) / jacobian
        density_bar = torch.exp(-0.5 * ((pre_tanh - m_bar) / s_bar) ** 2) / (s_bar * np.sqrt(2 * np.pi)) / jacobian
        coefficient = coefficient * torch.trapezoid(torch.sqrt(density * density_bar), y)
    torch.testing.assert_close(closed_form, 1.0 - coefficient, rtol=1e-6, atol=0)
    assert sac_l2c2.squared_hellinger(mean[None], log_std[None], mean[None], log_std[None]).item() == 0.0


@pytest.mark.parametrize("module", L2C2_MODULES, ids=module_id)
def test_l2c2_per_env_defaults_and_explicit_flags(module):
    def resolved(**kwargs):
        args = module.resolve_l2c2_args(module.resolve_args(module.Args(**kwargs)))
        return args.l2c2_sigma, args.l2c2_lambda_d, args.l2c2_lambda_u, args.l2c2_beta

    defaults = (1.0, 0.1, 10.0, 0.1)
    for env_id in ("Hopper-v5", "Walker2d-v5", "LunarLanderContinuous-v3", "HalfCheetah-v5"):
        assert resolved(env_id=env_id) == defaults
    # the paper tunes L2C2 only for SAC (Table 8); TD3 uses the defaults on Pendulum too
    assert resolved(env_id="Pendulum-v1") == ((1.0, 1.0, 100.0, 0.1) if module is sac_l2c2 else defaults)
    assert resolved(env_id="Pendulum-v1", l2c2_beta=0.5, l2c2_sigma=0.8) == \
        ((0.8, 1.0, 100.0, 0.5) if module is sac_l2c2 else (0.8, 0.1, 10.0, 0.5))
    assert resolved(env_id="Hopper-v5", l2c2_lambda_d=0.0) == (1.0, 0.0, 10.0, 0.1)  # 0 switches L2C2 off


@pytest.mark.parametrize("module", L2C2_MODULES, ids=module_id)
def test_l2c2_rejects_negative_or_inconsistent_settings(module):
    for flag in ("l2c2_sigma", "l2c2_lambda_d", "l2c2_lambda_u", "l2c2_beta"):
        with pytest.raises(SystemExit, match=f"^error: --{flag.replace('_', '-')} must be non-negative, got -1.0$"):
            module.resolve_l2c2_args(module.Args(env_id="Hopper-v5", **{flag: -1.0}))
    with pytest.raises(SystemExit, match="^error: --l2c2-lambda-u .* must exceed"):
        module.resolve_l2c2_args(module.Args(env_id="Hopper-v5", l2c2_lambda_d=5.0, l2c2_lambda_u=5.0))


@pytest.mark.parametrize("module", L2C2_MODULES, ids=module_id)
def test_l2c2_off_gives_zero_weights(module):
    data = random_batch()
    data["next_obs"][0] = data["obs"][0]  # a transition that stays put: d = 0 before the guard
    for settings in ((1.0, 0.0, 10.0, 0.1), (0.0, 0.1, 10.0, 0.1)):
        l2c2 = module.l2c2_interpolation(data, unit_noise(), *settings)
        assert torch.equal(l2c2["policy_weight"], torch.zeros(BATCH, dtype=torch.float64))
        assert torch.equal(l2c2["value_weight"], torch.zeros(BATCH, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------------- LipsNet


def small_lipsnet(module, seed: int = 0):
    torch.manual_seed(seed)
    return module.LipsNet(OBS_DIM, ACT_DIM, (16, 12)).double()


def random_states(count: int = 32, scale: float = 2.0, seed: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(count, OBS_DIM, generator=generator, dtype=torch.float64)


def lipsnet_output(lipsnet, x: torch.Tensor) -> torch.Tensor:
    """g(s), the LipsNet's output (SAC's LipsNet also returns f's last hidden features, for its log-std head)."""
    output = lipsnet(x)
    return output[0] if isinstance(output, tuple) else output


def reference_f(lipsnet, x: torch.Tensor) -> torch.Tensor:
    """f written as a plain ReLU MLP, independently of the script's Jacobian pass."""
    for layer in lipsnet.f_layers[:-1]:
        x = torch.relu(layer(x))
    return lipsnet.f_layers[-1](x)


@pytest.mark.parametrize("module", LIPSNET_MODULES, ids=module_id)
def test_lipsnet_jacobian_matches_autograd_per_sample(module):
    lipsnet = small_lipsnet(module)
    states = random_states()
    f, jacobian = lipsnet.f_and_jacobian(states)[:2]
    assert jacobian.shape == (len(states), ACT_DIM, OBS_DIM)
    for i, state in enumerate(states):
        torch.testing.assert_close(f[i], reference_f(lipsnet, state))
        torch.testing.assert_close(jacobian[i], torch.autograd.functional.jacobian(
            lambda x: reference_f(lipsnet, x), state))


@pytest.mark.parametrize("module", LIPSNET_MODULES, ids=module_id)
def test_lipsnet_output_and_gradients_match_per_sample_autograd(module):
    lipsnet = small_lipsnet(module)
    states = random_states(count=8)
    output = lipsnet_output(lipsnet, states)
    weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    loss = (weights * output).sum()

    expected_loss = 0.0
    for i, state in enumerate(states):
        # create_graph=True: the Jacobian norm stays differentiable in the weights, as the gradient must flow through it
        jacobian = torch.autograd.functional.jacobian(lambda x: reference_f(lipsnet, x), state, create_graph=True)
        k_value = torch.nn.functional.softplus(lipsnet.k_net(state))
        expected = k_value * reference_f(lipsnet, state) / (torch.sqrt((jacobian**2).sum()) + 1e-4)
        torch.testing.assert_close(output[i], expected)
        expected_loss = expected_loss + (weights[i] * expected).sum()
    loss_gradients = gradients(loss, lipsnet)
    assert_same_gradients(loss_gradients, gradients(expected_loss, lipsnet))
    assert all(grad.abs().sum() > 0 for grad in loss_gradients)  # every weight of f and K gets a gradient


@pytest.mark.parametrize("module", LIPSNET_MODULES, ids=module_id)
def test_lipsnet_k_starts_near_k_init_and_penalty_matches_loop(module):
    args = module.Args(env_id="Pendulum-v1", hidden_sizes=(16, 16), lipsnet_hidden_sizes=(16, 12))
    actor, _ = module.make_agent(args, OBS_DIM, ACT_DIM)
    actor = actor.double()
    states = random_states(count=64, scale=10.0)
    k_values = actor.lipsnet.k_value(states)
    # K = softplus(w . tanh(h) + b) with b = 50 + U(+-1/sqrt(32)); softplus is 1-Lipschitz and |w . tanh(h)| <= ||w||_1
    last = actor.lipsnet.k_net[-1]
    assert k_values.shape == (64, 1) and (last.bias - 50.0).abs() <= 32**-0.5
    assert ((k_values - 50.0).abs() <= last.weight.abs().sum() + 32**-0.5).all()

    penalty, k_mean = module.lipsnet_k_penalty(actor, {"obs": states})
    expected_penalty = sum(torch.nn.functional.softplus(actor.lipsnet.k_net(state))[0] ** 2 for state in states) / 64
    torch.testing.assert_close(penalty, expected_penalty)
    torch.testing.assert_close(k_mean, k_values.mean())
    assert not k_mean.requires_grad
    assert_same_gradients(gradients(penalty, actor.lipsnet.k_net), gradients(expected_penalty, actor.lipsnet.k_net))


def relu_masks(lipsnet, x: torch.Tensor) -> torch.Tensor:
    """Which ReLUs of f are active, per row of x: equal rows lie in the same linear region of f."""
    masks = []
    for layer in lipsnet.f_layers[:-1]:
        x = layer(x)
        masks.append(x > 0)
        x = torch.relu(x)
    return torch.cat(masks, dim=-1)


def frozen_k_action(lipsnet, state: torch.Tensor, k_value: torch.Tensor) -> torch.Tensor:
    """tanh(K f(x) / (||J_f(x)||_F + eps)) with K held at a given value; J_f(x) from autograd, as a function of x."""
    jacobian = torch.autograd.functional.jacobian(lambda x: reference_f(lipsnet, x), state)
    return torch.tanh(k_value * reference_f(lipsnet, state) / (torch.linalg.matrix_norm(jacobian) + 1e-4))


@pytest.mark.parametrize("module", LIPSNET_MODULES, ids=module_id)
def test_lipsnet_local_lipschitz_constant_is_at_most_k(module):
    """What LipsNet bounds: with K held at K(s), the action's Jacobian at s is diag(1 - a^2) K J_f / (||J_f||_F + eps),
    whose Frobenius (hence spectral) norm is below K(s), since tanh' <= 1 and J_f is constant on f's linear region
    around s. The full Jacobian adds diag(1 - a^2) n(s) grad K(s)^T (n = f / (||J_f|| + eps)), from K varying with s,
    which the construction does not bound."""
    lipsnet = small_lipsnet(module)
    with torch.no_grad():  # K ~ 1 rather than ~50: tanh is not saturated and the bound is not trivially loose
        lipsnet.k_net[-1].bias.sub_(49.0)
    step = 1e-6
    checked = 0
    for state in random_states(count=24):
        k_value = lipsnet.k_value(state[None])[0].detach()
        # finite differences, only where the whole stencil stays in one linear region of f (true for almost all)
        stencil = torch.stack([state + sign * step * direction for direction in torch.eye(OBS_DIM, dtype=torch.float64)
                               for sign in (1.0, -1.0)])
        masks = relu_masks(lipsnet, torch.cat([state[None], stencil]))
        if not (masks == masks[0]).all():
            continue
        columns = [(frozen_k_action(lipsnet, state + step * direction, k_value)
                    - frozen_k_action(lipsnet, state - step * direction, k_value)) / (2 * step)
                   for direction in torch.eye(OBS_DIM, dtype=torch.float64)]
        finite_difference_jacobian = torch.stack(columns, dim=-1)
        assert torch.linalg.matrix_norm(finite_difference_jacobian) <= k_value[0] * (1 + 1e-5)
        assert torch.linalg.matrix_norm(finite_difference_jacobian, ord=2) <= k_value[0] * (1 + 1e-5)

        # the full Jacobian of the actual output = the frozen-K part + the part from grad K
        full_jacobian = torch.autograd.functional.jacobian(
            lambda x: torch.tanh(lipsnet_output(lipsnet, x[None])[0]), state)
        frozen_jacobian = torch.autograd.functional.jacobian(lambda x, k=k_value: frozen_k_action(lipsnet, x, k), state)
        torch.testing.assert_close(frozen_jacobian, finite_difference_jacobian, rtol=1e-5, atol=1e-8)
        action = torch.tanh(lipsnet_output(lipsnet, state[None])[0])
        normalised = lipsnet_output(lipsnet, state[None])[0] / k_value
        k_gradient = torch.autograd.functional.jacobian(lambda x: lipsnet.k_value(x[None])[0, 0], state)
        torch.testing.assert_close(full_jacobian, frozen_jacobian + torch.outer((1 - action**2) * normalised,
                                                                                k_gradient))
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize("module", LIPSNET_MODULES, ids=module_id)
def test_lipsnet_agent_actions_lie_in_the_unit_box(module):
    args = module.resolve_args(module.Args(env_id="Pendulum-v1", hidden_sizes=(16, 16)))
    actor, qf = module.make_agent(args, OBS_DIM, ACT_DIM)
    assert isinstance(actor.lipsnet, module.LipsNet)  # the actor is LipsNet's (TD3: Actor; SAC: LipsNetActor)
    sizes = [layer.out_features for layer in actor.lipsnet.f_layers]
    assert sizes == [*module.Args.lipsnet_hidden_sizes, ACT_DIM]
    assert module.Args.lipsnet_hidden_sizes == ((64, 64) if module is td3_lipsnet else (256, 256))
    assert [weight.shape[-1] for weight in qf.weights] == [16, 16, 1]  # the critic is the backbone's
    states = torch.cat([random_states(count=64, scale=1.0), random_states(count=64, scale=1000.0)]).float()
    with torch.no_grad():
        actions = actor.deterministic_action(states)
    assert actions.shape == (128, ACT_DIM) and actions.abs().max() <= 1.0
    if module is sac_lipsnet:
        noise = torch.randn(128, ACT_DIM, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            sampled, log_prob = actor.get_action(states, noise)
            mean, _ = actor(states)
            zero_noise_action, _ = actor.get_action(states, torch.zeros_like(noise))
        assert sampled.abs().max() <= 1.0 and torch.isfinite(log_prob).all()
        # tanh applied once: the deterministic action is tanh of the LipsNet mean, and can reach near +-1 (a second
        # squashing would cap it at tanh(1) = 0.76)
        torch.testing.assert_close(actions, torch.tanh(lipsnet_output(actor.lipsnet, states)))
        torch.testing.assert_close(mean, lipsnet_output(actor.lipsnet, states))
        torch.testing.assert_close(zero_noise_action, actions)
        assert actions.abs().max() > 0.99


@pytest.mark.parametrize("script", ["sac_lipsnet_continuous", "sac_pave_lipsnet_continuous"])
def test_sac_lipsnet_log_std_is_a_linear_head_on_f_hidden_features(script):
    """The release's SAC LipsNet actor (sac/models/lips_sac.py:192, 208, 228-229, actor trunk pi=[]): log_std =
    Linear(f's last hidden features, after the ReLU), clamped to [-20, 2]; no other network. So the entropy term's
    gradient reaches f's hidden layers through the log-std too, and none reaches f's output layer that way."""
    module = importlib.import_module(f"cleanrl_pave.{script}")
    args = module.Args(env_id="Pendulum-v1", hidden_sizes=(16, 16), lipsnet_hidden_sizes=(16, 12))
    torch.manual_seed(0)
    actor = module.make_agent(args, OBS_DIM, ACT_DIM)[0].double()
    head = actor.log_std_head
    assert isinstance(head, torch.nn.Linear) and (head.in_features, head.out_features) == (12, ACT_DIM)
    expected_names = {f"lipsnet.{name}" for name, _ in actor.lipsnet.named_parameters()}
    expected_names |= {"log_std_head.weight", "log_std_head.bias"}
    assert {name for name, _ in actor.named_parameters()} == expected_names

    states = random_states(count=64, scale=2.0)
    features = states
    for layer in actor.lipsnet.f_layers[:-1]:  # f's hidden layers, written out
        features = torch.relu(layer(features))
    mean, log_std = actor(states)
    unclamped = features @ head.weight.T + head.bias
    assert ((unclamped > -20) & (unclamped < 2)).float().mean() > 0.9
    torch.testing.assert_close(log_std, unclamped.clamp(-20.0, 2.0))
    f_hidden = [parameter for layer in actor.lipsnet.f_layers[:-1] for parameter in layer.parameters()]
    grads = torch.autograd.grad(log_std.sum(), [*f_hidden, *actor.lipsnet.f_layers[-1].parameters()],
                                allow_unused=True)
    assert all(grad is not None and grad.abs().sum() > 0 for grad in grads[: len(f_hidden)])
    assert all(grad is None for grad in grads[len(f_hidden) :])

    with torch.no_grad():
        head.bias.copy_(torch.tensor([30.0, -30.0]))
    _, log_std = actor(states)
    assert (log_std[:, 0] == 2.0).all() and (log_std[:, 1] == -20.0).all()


def pooled_weights(nets: list, layer_of) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights and biases of one layer, pooled over many independently initialised LipsNets."""
    layers = [layer_of(net) for net in nets]
    return torch.cat([layer.weight.detach().flatten() for layer in layers]), \
        torch.cat([layer.bias.detach().flatten() for layer in layers])


@pytest.mark.parametrize("script", LIPSNET_SCRIPTS)
def test_lipsnet_initialisation_is_the_releases(script):
    """The release's `mlp` (td3/models/lips_td3.py:34-49, sac/models/lips_sac.py:53-68): kaiming_normal_(relu) for
    f's ReLU hidden layers, xavier_normal_ for f's output layer and both K layers; biases keep nn.Linear's
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), K's last one plus k_init = 50. Checked on pooled weights: zero mean, the
    formula's std, and a normal's kurtosis of 3 (nn.Linear's uniform init has std 1/sqrt(3 fan_in), kurtosis 1.8)."""
    module = importlib.import_module(f"cleanrl_pave.{script}")
    obs_dim, act_dim, hidden = 20, 6, (64, 48)
    torch.manual_seed(0)
    nets = [module.LipsNet(obs_dim, act_dim, hidden) for _ in range(100)]
    k_hidden = nets[0].k_net[0].out_features
    expected = {  # layer: (fan_in, weight std)
        "f hidden 1": (lambda net: net.f_layers[0], obs_dim, (2 / obs_dim) ** 0.5),
        "f hidden 2": (lambda net: net.f_layers[1], hidden[0], (2 / hidden[0]) ** 0.5),
        "f output": (lambda net: net.f_layers[2], hidden[1], (2 / (hidden[1] + act_dim)) ** 0.5),
        "K hidden": (lambda net: net.k_net[0], obs_dim, (2 / (obs_dim + k_hidden)) ** 0.5),
        "K output": (lambda net: net.k_net[-1], k_hidden, (2 / (k_hidden + 1)) ** 0.5),
    }
    assert len(nets[0].f_layers) == 3 and k_hidden == 32
    for name, (layer_of, fan_in, std) in expected.items():
        weights, biases = pooled_weights(nets, layer_of)
        assert weights.numel() >= 3200, name
        assert abs(weights.mean()) < 5 * std / weights.numel() ** 0.5, name
        assert weights.std() == pytest.approx(std, rel=0.06), name
        kurtosis = (weights**4).mean() / (weights**2).mean() ** 2
        assert kurtosis == pytest.approx(3.0, abs=0.35), name
        if name == "K output":
            biases = biases - 50.0
        bound = fan_in**-0.5
        assert biases.abs().max() <= bound and biases.abs().max() > 0.9 * bound, name  # uniform over the bound


@pytest.mark.parametrize("module", LIPSNET_MODULES, ids=module_id)
def test_lipsnet_rejects_bad_flags(module):
    with pytest.raises(SystemExit, match="^error: --lam-k must be non-negative, got -1.0$"):
        module.resolve_args(module.Args(env_id="Pendulum-v1", lam_k=-1.0))
    with pytest.raises(SystemExit, match="^error: --lipsnet-hidden-sizes must be positive integers"):
        module.resolve_args(module.Args(env_id="Pendulum-v1", lipsnet_hidden_sizes=(64, 0)))
