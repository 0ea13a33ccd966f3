"""CAPS, GRAD and ASAP: each actor regularizer against an independent per-sample computation (values and parameter
gradients), the properties that define it, the replay buffer's s_{t-1}, ASAP's Polyak copy, the per-env weights and
the one-line error for a negative weight."""

import copy
import importlib
import math
import pathlib

import pytest
import torch
import tyro

REPO = pathlib.Path(__file__).resolve().parents[1]
OBS_DIM, ACT_DIM, BATCH = 3, 2, 6


def load(script: str):
    return importlib.import_module(f"cleanrl_pave.{script}")


def tiny_actor(script: str, seed: int = 0):
    """The script's own actor (from make_agent), small and in float64 so that reference sums agree to ~1e-12."""
    module = load(script)
    torch.manual_seed(seed)
    actor, _ = module.make_agent(module.Args(hidden_sizes=(8, 8)), OBS_DIM, ACT_DIM)
    return actor.double()


def fixed_batch(seed: int = 1) -> tuple[dict, torch.Tensor]:
    """A replay batch of states and a CAPS observation noise n ~ N(0, 0.2^2 I), all fixed by `seed`."""
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    data = {"prev_obs": draw(BATCH, OBS_DIM), "obs": draw(BATCH, OBS_DIM), "next_obs": draw(BATCH, OBS_DIM)}
    return data, 0.2 * draw(BATCH, OBS_DIM)


def policy_of(actor, state: torch.Tensor) -> torch.Tensor:
    """pi(s) for ONE state (d_s,) -> (d_a,), spelled out from the layers rather than through deterministic_action:
    tanh(last layer) for TD3, tanh(mean) for SAC."""
    if hasattr(actor, "fc_mean"):
        return torch.tanh(actor.fc_mean(actor.trunk(state)))
    if hasattr(actor, "action_head"):
        return torch.tanh(actor.action_head(actor.trunk(state)))
    return torch.tanh(actor.net(state))


def prediction_of(actor, state: torch.Tensor) -> torch.Tensor:
    """ASAP's P(s) for one state: tanh output for TD3, plain linear output for SAC."""
    if hasattr(actor, "fc_next"):
        return actor.fc_next(actor.trunk(state))
    return torch.tanh(actor.predictor_head(actor.trunk(state)))


def mean_over_samples_and_dims(term) -> torch.Tensor:
    """sum over i < BATCH, j < ACT_DIM of term(i, j), divided by BATCH * ACT_DIM, one scalar at a time."""
    total = torch.zeros((), dtype=torch.float64)
    for i in range(BATCH):
        for j in range(ACT_DIM):
            total = total + term(i, j)
    return total / (BATCH * ACT_DIM)


def grad_weight(prev_action: float, next_action: float) -> float:
    """Grad-CAPS's weight tanh(1 / (a+ - a- + 1e-4)^2) for one scalar pair, as a plain float (so: no gradient)."""
    gap = next_action - prev_action + 1e-4
    return 1.0 if gap == 0.0 else math.tanh(1.0 / gap**2)


def parameter_grads(loss: torch.Tensor, module: torch.nn.Module) -> dict:
    grads = torch.autograd.grad(loss, list(module.parameters()), retain_graph=True, allow_unused=True)
    return dict(zip([name for name, _ in module.named_parameters()], grads))


def assert_same_grads(loss: torch.Tensor, reference: torch.Tensor, module: torch.nn.Module) -> None:
    assert torch.allclose(loss, reference, rtol=1e-10, atol=1e-13), (loss.item(), reference.item())
    ours, theirs = parameter_grads(loss, module), parameter_grads(reference, module)
    for name in ours:
        if theirs[name] is None:
            assert ours[name] is None or not ours[name].any(), f"{name} gets a gradient it should not"
        else:
            assert ours[name] is not None, f"{name} gets no gradient"
            assert torch.allclose(ours[name], theirs[name], rtol=1e-9, atol=1e-12), name


# ---------------------------------------------------------------- CAPS


@pytest.mark.parametrize("script", ["td3_caps_continuous", "sac_caps_continuous"])
def test_caps_losses_match_a_per_sample_computation(script):
    actor = tiny_actor(script)
    data, noise = fixed_batch()
    temporal, spatial = load(script).caps_losses(actor, data, noise)

    actions = [policy_of(actor, data["obs"][i]) for i in range(BATCH)]
    next_actions = [policy_of(actor, data["next_obs"][i]) for i in range(BATCH)]
    noisy_actions = [policy_of(actor, data["obs"][i] + noise[i]) for i in range(BATCH)]
    reference_temporal = mean_over_samples_and_dims(lambda i, j: 0.5 * (actions[i][j] - next_actions[i][j]) ** 2)
    reference_spatial = mean_over_samples_and_dims(lambda i, j: 0.5 * (actions[i][j] - noisy_actions[i][j]) ** 2)
    assert_same_grads(temporal, reference_temporal, actor)
    assert_same_grads(spatial, reference_spatial, actor)
    if script.startswith("sac"):  # pi is tanh(mean): the log-std head is not regularized
        assert parameter_grads(temporal + spatial, actor)["fc_logstd.weight"] is None


@pytest.mark.parametrize("script", ["td3_caps_continuous", "sac_caps_continuous"])
def test_caps_gradient_matches_finite_differences(script):
    actor = tiny_actor(script)
    data, noise = fixed_batch()
    caps_losses = load(script).caps_losses
    weight = next(actor.parameters())  # the first layer's weight matrix

    def total_loss():
        temporal, spatial = caps_losses(actor, data, noise)
        return temporal + 5.0 * spatial

    (analytic,) = torch.autograd.grad(total_loss(), weight)
    for index in [(0, 0), (3, 1), (7, 2)]:
        with torch.no_grad():
            weight[index] += 1e-6
            plus = total_loss().item()
            weight[index] -= 2e-6
            minus = total_loss().item()
            weight[index] += 1e-6
        assert analytic[index].item() == pytest.approx((plus - minus) / 2e-6, rel=1e-6, abs=1e-10)


@pytest.mark.parametrize("script", ["td3_caps_continuous", "sac_caps_continuous"])
def test_caps_terms_vanish_for_a_constant_policy(script):
    actor = tiny_actor(script)
    data, noise = fixed_batch()
    temporal, spatial = load(script).caps_losses(actor, data, noise)
    assert temporal > 0 and spatial > 0
    last_layer = actor.fc_mean if script.startswith("sac") else actor.net[-1]
    with torch.no_grad():
        last_layer.weight.zero_()  # pi(s) = tanh(bias) for every s
    temporal, spatial = load(script).caps_losses(actor, data, noise)
    assert temporal.item() == 0.0 and spatial.item() == 0.0


# ---------------------------------------------------------------- GRAD


@pytest.mark.parametrize("script", ["td3_grad_continuous", "sac_grad_continuous", "td3_asap_continuous",
                                    "sac_asap_continuous"])
def test_grad_caps_penalty_matches_scalar_loops_and_stops_the_weight_gradient(script):
    generator = torch.Generator().manual_seed(3)
    prev_actions, actions, next_actions = (
        torch.rand(BATCH, ACT_DIM, generator=generator, dtype=torch.float64).mul(2).sub(1).requires_grad_(True)
        for _ in range(3))
    penalty = load(script).grad_caps_penalty(prev_actions, actions, next_actions)

    def term(i, j):
        weight = grad_weight(prev_actions[i, j].item(), next_actions[i, j].item())
        return 0.5 * (2 * actions[i, j] - next_actions[i, j] - prev_actions[i, j]) ** 2 * weight

    reference = mean_over_samples_and_dims(term)
    assert penalty.item() == pytest.approx(reference.item(), rel=1e-12)
    leaves = [prev_actions, actions, next_actions]
    for ours, theirs in zip(torch.autograd.grad(penalty, leaves), torch.autograd.grad(reference, leaves)):
        assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("script", ["td3_grad_continuous", "sac_grad_continuous"])
def test_grad_loss_matches_a_per_sample_computation(script):
    actor = tiny_actor(script)
    data, _ = fixed_batch()
    loss = load(script).grad_loss(actor, data)
    prev, now, nxt = ([policy_of(actor, data[key][i]) for i in range(BATCH)] for key in ("prev_obs", "obs", "next_obs"))

    def term(i, j):
        weight = grad_weight(prev[i][j].item(), nxt[i][j].item())
        return 0.5 * (2 * now[i][j] - nxt[i][j] - prev[i][j]) ** 2 * weight

    assert_same_grads(loss, mean_over_samples_and_dims(term), actor)


def test_grad_weight_keeps_zig_zags_and_spares_deliberate_moves():
    penalty_fn = load("td3_grad_continuous").grad_caps_penalty

    def weight(prev_action, action, next_action):
        """The weight the penalty applied: penalty / D for one scalar triple."""
        prev_action, action, next_action = (torch.tensor([[value]], dtype=torch.float64)
                                             for value in (prev_action, action, next_action))
        second_difference = 0.5 * (2 * action - next_action - prev_action) ** 2
        return (penalty_fn(prev_action, action, next_action) / second_difference).item()

    assert weight(0.3, 0.8, 0.3) == pytest.approx(1.0, abs=1e-12)  # zig-zag: back to where it was
    assert weight(0.3, -0.5, 0.3001) == pytest.approx(1.0, abs=1e-6)
    assert weight(-1.0, 0.2, 1.0) == pytest.approx(math.tanh(1 / 2.0001**2))  # the largest move in [-1, 1]
    assert weight(-20.0, 3.0, 20.0) < 1e-3  # a large deliberate move is barely penalised
    assert weight(0.3, 0.8, 0.3) > weight(-0.2, 0.8, 0.3) > weight(-1.0, 0.8, 0.3)


# ---------------------------------------------------------------- ASAP


@pytest.mark.parametrize("script", ["td3_asap_continuous", "sac_asap_continuous"])
def test_asap_losses_match_a_per_sample_computation(script):
    actor = tiny_actor(script)
    actor_copy = copy.deepcopy(actor)
    with torch.no_grad():  # a copy that lags behind the actor, as the Polyak copy does
        for parameter in actor_copy.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    data, _ = fixed_batch()
    temporal, spatial, predictor = load(script).asap_losses(actor, actor_copy, data)

    prev, now, nxt = ([policy_of(actor, data[key][i]) for i in range(BATCH)] for key in ("prev_obs", "obs", "next_obs"))
    predicted = [prediction_of(actor, data["obs"][i]) for i in range(BATCH)]
    target_predicted = [[value.item() for value in prediction_of(actor_copy, data["obs"][i])] for i in range(BATCH)]

    def temporal_term(i, j):
        weight = grad_weight(prev[i][j].item(), nxt[i][j].item())
        return 0.5 * (2 * now[i][j] - nxt[i][j] - prev[i][j]) ** 2 * weight

    assert_same_grads(temporal, mean_over_samples_and_dims(temporal_term), actor)
    assert_same_grads(spatial, mean_over_samples_and_dims(
        lambda i, j: 0.5 * (nxt[i][j] - target_predicted[i][j]) ** 2), actor)
    assert_same_grads(predictor, mean_over_samples_and_dims(
        lambda i, j: 0.5 * (predicted[i][j] - nxt[i][j].item()) ** 2), actor)
    assert all(grad is None for grad in parameter_grads(temporal + spatial + predictor, actor_copy).values())


@pytest.mark.parametrize("script", ["td3_asap_continuous", "sac_asap_continuous"])
def test_asap_stop_gradients_separate_the_heads(script):
    actor = tiny_actor(script)
    data, _ = fixed_batch()
    _, spatial, predictor = load(script).asap_losses(actor, copy.deepcopy(actor), data)
    action_head, predictor_head = ("fc_mean", "fc_next") if script.startswith("sac") else \
        ("action_head", "predictor_head")
    # the predictor regresses onto sg(pi(s')): it does not move the action head ...
    assert parameter_grads(predictor, actor)[f"{action_head}.weight"] is None
    assert parameter_grads(predictor, actor)[f"{predictor_head}.weight"].abs().sum() > 0
    # ... and pi(s') is pulled toward sg(P_targ(s)): the online predictor head gets nothing from it
    assert parameter_grads(spatial, actor)[f"{predictor_head}.weight"] is None
    assert parameter_grads(spatial, actor)[f"{action_head}.weight"].abs().sum() > 0


@pytest.mark.parametrize("script", ["td3_asap_continuous", "sac_asap_continuous"])
def test_asap_actor_acts_with_its_action_head_and_predicts_with_its_predictor(script):
    actor = tiny_actor(script)
    data, _ = fixed_batch()
    state = data["obs"][2]
    action = actor.deterministic_action(state.unsqueeze(0))[0]
    assert torch.allclose(action, policy_of(actor, state))
    assert torch.allclose(actor.act_and_predict(state.unsqueeze(0))[1][0], prediction_of(actor, state))
    assert not torch.allclose(action, prediction_of(actor, state))
    actions, predictions = actor.act_and_predict(data["obs"])
    assert torch.allclose(actions, actor.deterministic_action(data["obs"]))
    assert torch.allclose(predictions, torch.stack([prediction_of(actor, state) for state in data["obs"]]))


@pytest.mark.parametrize("script", ["td3_asap_continuous", "sac_asap_continuous"])
def test_asap_polyak_copy_steps_at_every_gradient_step(script, tmp_path, monkeypatch):
    """The release steps ASAP's copy at every gradient step (td3/models/asap_td3.py:495-496, interval 1, outside the
    policy_delay block; README: Baselines), so TD3's copy takes two Polyak steps per delayed actor update. Both runs
    below make 20 gradient steps: TD3 one per env step after warm-up, SAC 2 x 10."""
    monkeypatch.chdir(tmp_path)
    module = load(script)
    asap_steps, lerp = [], torch._foreach_lerp_

    def counted_lerp(targets, sources, weight):
        if weight == 0.01:  # --asap-tau; the critic's and TD3 actor's targets move by --tau 0.005
            # the frozen copy moves toward the trained actor, never the other way
            asap_steps.append((all(not t.requires_grad for t in targets), all(s.requires_grad for s in sources)))
        return lerp(targets, sources, weight)

    monkeypatch.setattr(torch, "_foreach_lerp_", counted_lerp)
    schedule = {"train_freq": 10, "gradient_steps": 10, "log_freq": 10} if script.startswith("sac") else {}
    module.main(module.Args(env_id="Pendulum-v1", total_timesteps=120, learning_starts=100, hidden_sizes=(8, 8),
                            eval_freq=0, eval_episodes=1, seed=1, run_name="run", **schedule))
    assert asap_steps == [(True, True)] * 20


# ---------------------------------------------------------------- s_{t-1} in the replay buffer, end to end


def replay_fields(module, payload: dict) -> dict:
    """The replay buffer of a checkpoint, split into its named fields (the scripts' field order)."""
    obs_dim, act_dim = payload["obs_dim"], payload["act_dim"]
    buffer = module.ReplayBuffer(payload["replay_buffer"]["size"], {
        "obs": (obs_dim,), "actions": (act_dim,), "rewards": (), "next_obs": (obs_dim,), "dones": (),
        "prev_obs": (obs_dim,)}, torch.device("cpu"))
    buffer.load_state_dict(payload["replay_buffer"])
    return {name: buffer.storage[:, column] for name, column in buffer.columns.items()}


def assert_prev_obs_stays_in_its_episode(fields: dict, episode_starts: set) -> None:
    assert 0 in episode_starts and len(episode_starts) > 1, "the run should span more than one episode"
    for row in range(len(fields["obs"])):
        if row in episode_starts:
            assert torch.equal(fields["prev_obs"][row], fields["obs"][row]), f"row {row} starts an episode"
        else:
            assert torch.equal(fields["obs"][row], fields["next_obs"][row - 1]), f"row {row} continues an episode"
            assert torch.equal(fields["prev_obs"][row], fields["obs"][row - 1]), f"row {row}: wrong s_(t-1)"


RESOLVED_ON_PENDULUM = {
    "td3_grad_continuous": {"lam_t": 1.0},
    "sac_grad_continuous": {"lam_t": 1.0},
    "td3_asap_continuous": {"lam_p": 2.0, "lam_s": 0.03, "lam_t": 0.005, "asap_tau": 0.01},
    "sac_asap_continuous": {"lam_p": 2.0, "lam_s": 5.0, "lam_t": 0.5, "asap_tau": 0.01},
}


@pytest.mark.parametrize("script", list(RESOLVED_ON_PENDULUM))
def test_training_stores_prev_obs_within_episodes(script, tmp_path, monkeypatch):
    """Pendulum truncates every 200 steps: rows 0 and 200 start episodes. The checkpoint at step 250 holds the buffer
    (and, for ASAP, the Polyak copy, which a resumed run restores)."""
    monkeypatch.chdir(tmp_path)
    module = load(script)
    args = module.Args(env_id="Pendulum-v1", total_timesteps=300, learning_starts=100, hidden_sizes=(32, 32),
                       eval_freq=0, eval_episodes=1, seed=1, checkpoint_freq=250, run_name="run")
    results = module.main(args)
    assert {key: results["config"][key] for key in RESOLVED_ON_PENDULUM[script]} == RESOLVED_ON_PENDULUM[script]
    payload = torch.load("runs/run/checkpoint.pt", weights_only=False)
    fields = replay_fields(module, payload)
    assert len(fields["obs"]) == 250
    assert_prev_obs_stays_in_its_episode(fields, {0, 200})
    if "asap" in script:
        copy_state, actor_state = payload["asap_actor_target"], payload["actor"]
        assert copy_state.keys() == actor_state.keys()
        assert any(not torch.equal(copy_state[key], actor_state[key]) for key in actor_state)
        resumed = module.main(module.Args(**{**vars(args), "resume": True}))
        assert resumed["global_step"] == 300


def test_prev_obs_restarts_after_terminations(tmp_path, monkeypatch):
    """Random actions make Hopper fall within tens of steps: after every terminated row an episode starts."""
    monkeypatch.chdir(tmp_path)
    module = load("sac_asap_continuous")
    module.main(module.Args(env_id="Hopper-v5", total_timesteps=300, learning_starts=300, hidden_sizes=(16, 16),
                            eval_freq=0, eval_episodes=1, seed=2, checkpoint_freq=250, run_name="run"))
    fields = replay_fields(module, torch.load("runs/run/checkpoint.pt", weights_only=False))
    episode_starts = {0} | {row + 1 for row in range(len(fields["dones"]) - 1) if fields["dones"][row] == 1.0}
    assert len(episode_starts) >= 3
    assert_prev_obs_stays_in_its_episode(fields, episode_starts)


# ---------------------------------------------------------------- per-env weights and flags

RESOLVERS = {"caps": "resolve_caps_args", "grad": "resolve_grad_args", "asap": "resolve_asap_args"}
CAPS = {"Pendulum-v1": {"lam_t": 1.0, "lam_s": 5.0}, "Walker2d-v5": {"lam_t": 0.1, "lam_s": 0.5},
        "HalfCheetah-v5": {"lam_t": 0.1, "lam_s": 0.5}}
GRAD = {"Pendulum-v1": {"lam_t": 1.0}, "Walker2d-v5": {"lam_t": 1.0}, "HalfCheetah-v5": {"lam_t": 1.0}}
PAPER_WEIGHTS = {
    "td3_caps_continuous": CAPS,
    "sac_caps_continuous": CAPS,
    "td3_grad_continuous": GRAD,
    "sac_grad_continuous": GRAD,
    "td3_asap_continuous": {"Pendulum-v1": {"lam_p": 2.0, "lam_s": 0.03, "lam_t": 0.005},
                            "Walker2d-v5": {"lam_p": 2.0, "lam_s": 0.3, "lam_t": 0.05},
                            "Hopper-v5": {"lam_p": 2.0, "lam_s": 0.3, "lam_t": 0.07},
                            "Reacher-v5": {"lam_p": 2.0, "lam_s": 0.1, "lam_t": 0.1},
                            "HalfCheetah-v5": {"lam_p": 2.0, "lam_s": 0.3, "lam_t": 0.05}},
    "sac_asap_continuous": {"Pendulum-v1": {"lam_p": 2.0, "lam_s": 5.0, "lam_t": 0.5},
                            "Walker2d-v5": {"lam_p": 2.0, "lam_s": 5.0, "lam_t": 0.5},
                            "Ant-v5": {"lam_p": 2.0, "lam_s": 30.0, "lam_t": 0.5},
                            "Hopper-v5": {"lam_p": 2.0, "lam_s": 10.0, "lam_t": 0.5},
                            "HalfCheetah-v5": {"lam_p": 2.0, "lam_s": 0.3, "lam_t": 0.05}},
}


def resolve(script: str, *flags: str):
    module = load(script)
    resolver = getattr(module, RESOLVERS[script.split("_")[1]])
    return resolver(module.resolve_args(tyro.cli(module.Args, args=list(flags))))


@pytest.mark.parametrize("script", list(PAPER_WEIGHTS))
def test_weights_default_per_env_and_an_explicit_flag_wins(script):
    for env_id, weights in PAPER_WEIGHTS[script].items():
        resolved = resolve(script, "--env-id", env_id)
        assert {name: getattr(resolved, name) for name in weights} == weights, env_id
    pendulum = PAPER_WEIGHTS[script]["Pendulum-v1"]
    for name in pendulum:
        explicit = resolve(script, "--env-id", "Pendulum-v1", f"--{name.replace('_', '-')}", "0.7")
        assert {key: getattr(explicit, key) for key in pendulum} == {**pendulum, name: 0.7}
    assert resolve(script, "--env-id", "Pendulum-v1", "--lam-t", "0").lam_t == 0.0  # 0 switches a term off


@pytest.mark.parametrize("script", list(PAPER_WEIGHTS))
def test_a_negative_weight_is_rejected(script):
    for name in PAPER_WEIGHTS[script]["Pendulum-v1"]:
        flag = f"--{name.replace('_', '-')}"
        with pytest.raises(SystemExit) as error:
            resolve(script, "--env-id", "Pendulum-v1", flag, "-1")
        assert str(error.value) == f"error: {flag} must be non-negative, got -1.0"
