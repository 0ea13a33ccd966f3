"""PAVE (README: PAVE): the critic terms, eager and compiled, against a plain autograd reference, their meaning on
critics with known derivatives, the per-env weights and their help text, and the two training scripts end to end
(logging, the all-zero-weight base run, the NaN/Inf guard, compilation by default and its eager fallback)."""

import importlib
import itertools
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cleanrl_pave.compiling import compile_with_fallback
from tests.helpers import eager

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = ["td3_pave_continuous", "sac_pave_continuous"]
OBS_DIM, ACT_DIM = 5, 3
# every on/off pattern of (MPR, VFC, Curv) that computes something, with unequal weights
WEIGHT_PATTERNS = [(w1, w2, w3) for w1, w2, w3 in itertools.product((0.0, 0.7), (0.0, 1.3), (0.0, 2.1))
                   if w1 or w2 or w3]


def critic_fn(qf, critic: int):
    """Critic `critic` of the stacked network as a plain function (obs, actions) -> (B,), layer by layer."""
    activation = F.silu if qf.activation == "silu" else F.relu

    def q(obs, actions):
        x = torch.cat([obs, actions], -1)
        for layer, (weight, bias) in enumerate(zip(qf.weights, qf.biases)):
            x = x @ weight[critic] + bias[critic, 0]
            if layer < len(qf.weights) - 1:
                x = activation(x)
        return x.squeeze(-1)

    return q


def reference_terms(critics, obs, actions, next_obs, state_noise, probes, delta):
    """The release's way, critic by critic and state by state: g = dQ/da with create_graph, H v by a double backward;
    q: each critic's Q(s, a), as the TD loss takes it."""
    mpr = vfc = curv = 0.0
    for q in critics:
        def action_grad(states):
            leaf = actions.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(q(states, leaf).sum(), leaf, create_graph=True)
            return grad, leaf

        grad_s, leaf_s = action_grad(obs)
        mpr = mpr + F.mse_loss(grad_s, action_grad(obs + state_noise)[0])
        vfc = vfc + F.mse_loss(grad_s, action_grad(next_obs)[0])
        (hessian_probe,) = torch.autograd.grad((grad_s * probes).sum(), leaf_s, create_graph=True)
        curv = curv + torch.relu((hessian_probe * probes).sum(-1) + delta).mean()
    return {"q": torch.stack([q(obs, actions) for q in critics]), "mpr": mpr, "vfc": vfc, "curv": curv}


def critic_and_batch(script: str, hidden=(24, 16), activation="silu", dtype=torch.float64, batch=9, seed=0,
                     weight_scale=2.5):
    """A stacked twin critic with weights scaled up (so the terms are far from 0) and a replay-like batch."""
    module = importlib.import_module(f"cleanrl_pave.{script}")
    torch.manual_seed(seed)
    qf = module.QNetwork(OBS_DIM, ACT_DIM, hidden, activation).to(dtype)
    with torch.no_grad():
        for weight in qf.weights:
            weight.mul_(weight_scale)
    generator = torch.Generator().manual_seed(seed + 1)
    obs = torch.randn(batch, OBS_DIM, generator=generator, dtype=dtype)
    batch_data = {
        "obs": obs,
        "actions": torch.rand(batch, ACT_DIM, generator=generator, dtype=dtype) * 2 - 1,
        "next_obs": obs + 0.3 * torch.randn(batch, OBS_DIM, generator=generator, dtype=dtype),
        "state_noise": 0.05 * torch.randn(batch, OBS_DIM, generator=generator, dtype=dtype),
        "probes": torch.randint(0, 2, (batch, ACT_DIM), generator=generator).to(dtype) * 2 - 1,
    }
    return module, qf, batch_data


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value - reference).abs().max() / reference.abs().max().clamp_min(1e-30)).item()


def check_against_reference(pave_terms, qf, data, weights, delta, reference) -> None:
    """Q(s, a), the terms and the gradient of a loss weighting all of them with respect to every critic parameter
    within 1e-6 relative of the reference."""
    params = list(qf.parameters())
    on = [value if weight else None for value, weight in zip((data["state_noise"], data["next_obs"], data["probes"]),
                                                              weights)]  # a term's input, None when it is off
    terms = pave_terms(qf, data["obs"], data["actions"], *on, delta)
    assert terms["q"].shape == reference["q"].shape and relative_error(terms["q"], reference["q"]) < 1e-6
    q_weights = torch.linspace(-1.0, 2.0, reference["q"].numel(), dtype=reference["q"].dtype).view_as(reference["q"])
    for name, weight in zip(("mpr", "vfc", "curv"), weights):
        if weight:
            assert relative_error(terms[name], reference[name]) < 1e-6, (name, weights, delta)
        else:
            assert terms[name].item() == 0.0 and not terms[name].requires_grad
    loss = (q_weights * terms["q"]).sum() + sum(weight * terms[name] for name, weight in zip(("mpr", "vfc", "curv"),
                                                                                             weights))
    reference_loss = (q_weights * reference["q"]).sum() + sum(weight * reference[name] for name, weight
                                                              in zip(("mpr", "vfc", "curv"), weights))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    reference_grads = torch.autograd.grad(reference_loss, params, retain_graph=True, allow_unused=True)
    for param, grad, reference_grad in zip(params, grads, reference_grads):
        grad = torch.zeros_like(param) if grad is None else grad
        reference_grad = torch.zeros_like(param) if reference_grad is None else reference_grad
        assert relative_error(grad, reference_grad) < 1e-6, (weights, delta)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("hidden,activation", [((24, 16), "silu"), ((20,), "silu"), ((16, 12, 10), "silu"),
                                               ((24, 16), "relu")])
def test_terms_and_parameter_gradients_match_the_autograd_reference(script, hidden, activation):
    """float64, eager: every on/off pattern of the three terms and a curvature margin that leaves the hinge active on
    some samples and not on others."""
    module, qf, data = critic_and_batch(script, hidden, activation)
    critics = [critic_fn(qf, critic) for critic in range(2)]
    for delta in (1.0, 0.3):
        reference = reference_terms(critics, delta=delta, **data)
        for weights in WEIGHT_PATTERNS:
            check_against_reference(module.pave_terms, qf, data, weights, delta, reference)


@pytest.mark.parametrize("script", SCRIPTS)
def test_compiled_terms_and_parameter_gradients_match_the_autograd_reference(script, capsys):
    """The scripts' default path: pave_terms through torch.compile (really compiled: no fallback warning), float64,
    all three terms on, the hinge partly active. One configuration only, as each compilation takes 20-30 s."""
    module, qf, data = critic_and_batch(script)
    compiled = compile_with_fallback(module.pave_terms, "the PAVE loss", "--no-pave-compile")
    reference = reference_terms([critic_fn(qf, critic) for critic in range(2)], delta=0.3, **data)
    check_against_reference(compiled, qf, data, (0.7, 1.3, 2.1), 0.3, reference)
    check_against_reference(compiled, qf, data, (0.7, 1.3, 2.1), 0.3, reference)  # the compiled code, not its warm-up
    output = capsys.readouterr()
    assert "compiled the PAVE loss in" in output.out and "warning" not in output.err


def test_the_curvature_hinge_is_partly_active_in_the_exactness_test():
    """Guards the test above: with delta = 0.3 some probes have v^T H v + delta < 0 and some > 0."""
    _, qf, data = critic_and_batch("td3_pave_continuous")
    for critic in range(2):
        q = critic_fn(qf, critic)
        shifted = [torch.autograd.functional.hessian(lambda a: q(obs[None], a[None]).sum(), action) @ probe @ probe
                   + 0.3 for obs, action, probe in zip(data["obs"], data["actions"], data["probes"])]
        assert min(shifted) < 0 < max(shifted)


@pytest.mark.parametrize("script", SCRIPTS)
def test_float32_terms_are_close_to_the_float64_reference(script):
    """The scripts train in float32; MPR is a difference of nearby gradients, so allow 1e-3 relative."""
    module, qf, data = critic_and_batch(script, batch=64)
    reference = reference_terms([critic_fn(qf, critic) for critic in range(2)], delta=1.0, **data)
    qf32 = qf.float()
    data = {name: value.float() for name, value in data.items()}
    terms = module.pave_terms(qf32, data["obs"], data["actions"], data["state_noise"], data["next_obs"],
                              data["probes"], 1.0)
    for name in ("mpr", "vfc", "curv"):
        assert relative_error(terms[name].double(), reference[name]) < 1e-3, name


def quadratic_critic(w_mixed: torch.Tensor, a_curv: torch.Tensor):
    """Q(s, a) = a^T W s - 0.5 a^T A a: d2Q/dsda = W, d2Q/da2 = -A, exactly, everywhere."""
    return lambda obs, actions: (actions * (obs @ w_mixed.T)).sum(-1) - 0.5 * ((actions @ a_curv) * actions).sum(-1)


def all_sign_vectors(dim: int) -> torch.Tensor:
    """Every Rademacher vector in `dim` dims: averaging over them is the exact expectation."""
    return torch.tensor(list(itertools.product((-1.0, 1.0), repeat=dim)), dtype=torch.float64)


def isotropic_directions(dim: int) -> torch.Tensor:
    """+-sqrt(dim) e_j, j < dim: zero mean and average outer product I, like N(0, I), so that averaging over them
    gives the exact expectation of a quadratic form of the noise."""
    return dim**0.5 * torch.cat([torch.eye(dim), -torch.eye(dim)]).double()


def test_reference_semantics_on_a_critic_with_known_derivatives():
    """The reference (which the fast terms equal, above) measures what README "PAVE" says: MPR / sigma^2 averages to
    ||W||_F^2 / d_a, VFC is ||W (s' - s)||^2 / d_a, the Curv probe averages to tr(-A), and the hinge is
    relu(v^T H v + delta), summed over the two critics."""
    generator = torch.Generator().manual_seed(7)
    w_mixed = [torch.randn(ACT_DIM, OBS_DIM, generator=generator, dtype=torch.float64) for _ in range(2)]
    roots = [torch.randn(ACT_DIM, ACT_DIM, generator=generator, dtype=torch.float64) for _ in range(2)]
    a_curv = [root @ root.T + 0.5 * torch.eye(ACT_DIM, dtype=torch.float64) for root in roots]
    critics = [quadratic_critic(w, a) for w, a in zip(w_mixed, a_curv)]

    signs = all_sign_vectors(ACT_DIM)
    sigma, n_states = 0.01, 4
    obs = torch.randn(n_states, OBS_DIM, generator=generator, dtype=torch.float64)
    # every state with every sign vector v and every noise direction: the batch averages are exact expectations over
    # eps ~ (0, sigma^2 I) and Rademacher v
    noise_directions = isotropic_directions(OBS_DIM)
    rows = list(itertools.product(range(n_states), range(len(signs)), range(len(noise_directions))))
    batch_obs = obs[[r[0] for r in rows]]
    probes = signs[[r[1] for r in rows]]
    state_noise = sigma * noise_directions[[r[2] for r in rows]]
    actions = torch.rand(len(rows), ACT_DIM, generator=generator, dtype=torch.float64) * 2 - 1
    next_obs = batch_obs + torch.randn(len(rows), OBS_DIM, generator=generator, dtype=torch.float64)

    big_delta = 1e3  # the hinge is active everywhere, so Curv = sum_i (mean v^T H_i v + delta)
    terms = reference_terms(critics, batch_obs, actions, next_obs, state_noise, probes, big_delta)
    expected_mpr = sum(sigma**2 * w.square().sum() / ACT_DIM for w in w_mixed)
    torch.testing.assert_close(terms["mpr"], expected_mpr, rtol=1e-9, atol=0)
    expected_vfc = sum(((next_obs - batch_obs) @ w.T).square().sum(-1).mean() / ACT_DIM for w in w_mixed)
    torch.testing.assert_close(terms["vfc"], expected_vfc, rtol=1e-9, atol=0)
    expected_curv = sum(-torch.trace(a) + big_delta for a in a_curv)
    torch.testing.assert_close(terms["curv"], expected_curv, rtol=1e-9, atol=0)

    for delta in (0.0, 2.0, -1.0):  # the hinge: relu(-v^T A v + delta), sample by sample
        hinge = reference_terms(critics, batch_obs, actions, next_obs, state_noise, probes, delta)["curv"]
        expected = sum(torch.relu(-((probes @ a) * probes).sum(-1) + delta).mean() for a in a_curv)
        torch.testing.assert_close(hinge, expected, rtol=1e-12, atol=1e-12)
    assert reference_terms(critics, batch_obs, actions, next_obs, state_noise, probes, -1e6)["curv"] == 0


@pytest.mark.parametrize("script", SCRIPTS)
def test_fast_terms_measure_the_exact_critic_derivatives(script):
    """On an MLP, against exact autograd Hessians: MPR / sigma^2 over isotropic noise tends to ||d2Q/dsda||_F^2 / d_a
    as sigma -> 0; VFC with a tiny step s' - s = h u is h^2 ||d2Q/dsda u||^2 / d_a to first order; and
    Curv over all sign vectors with the hinge active is the trace of d2Q/da2 plus delta."""
    module, qf, data = critic_and_batch(script, batch=3)
    signs = all_sign_vectors(ACT_DIM)
    directions = isotropic_directions(OBS_DIM)
    rows = list(itertools.product(range(3), range(len(signs)), range(len(directions))))
    obs, actions = data["obs"][[r[0] for r in rows]], data["actions"][[r[0] for r in rows]]
    step, sigma = torch.randn(OBS_DIM, dtype=torch.float64), 1e-5
    terms = module.pave_terms(qf, obs, actions, sigma * directions[[r[2] for r in rows]], obs + sigma * step,
                              signs[[r[1] for r in rows]], 1e3)

    expected_mpr = expected_vfc = expected_curv = 0.0
    for critic in range(2):
        q = critic_fn(qf, critic)
        for obs_row, action_row in zip(data["obs"], data["actions"]):
            hessian = torch.autograd.functional.hessian(lambda s, a: q(s[None], a[None]).sum(), (obs_row, action_row))
            mixed, action_hessian = hessian[1][0], hessian[1][1]  # d2Q/da ds (d_a, d_s), d2Q/da2
            expected_mpr += sigma**2 * mixed.square().sum() / ACT_DIM / 3
            expected_vfc += sigma**2 * (mixed @ step).square().sum() / ACT_DIM / 3
            expected_curv += (torch.trace(action_hessian) + 1e3) / 3
    torch.testing.assert_close(terms["mpr"], expected_mpr, rtol=1e-3, atol=0)
    torch.testing.assert_close(terms["vfc"], expected_vfc, rtol=1e-3, atol=0)
    torch.testing.assert_close(terms["curv"], expected_curv, rtol=1e-9, atol=0)


@pytest.mark.parametrize("script", SCRIPTS)
def test_zero_weights_leave_the_base_critic_loss(script):
    """All-zero weights: no term is computed, nothing joins the graph, Q(s, a) is the base's own forward, bit for
    bit, and TD + sum lambda * term is the base's TD loss."""
    module, qf, data = critic_and_batch(script)
    terms = module.pave_terms(qf, data["obs"], data["actions"], None, None, None, 1.0)
    td_loss = qf(data["obs"], data["actions"]).square().mean(1).sum()
    total = terms["q"].square().mean(1).sum() + sum(0.0 * terms[name] for name in ("mpr", "vfc", "curv"))
    assert all(terms[name].item() == 0.0 and not terms[name].requires_grad for name in ("mpr", "vfc", "curv"))
    assert torch.equal(total, td_loss)


def tiny_run(script: str, env_id: str, tmp_path, monkeypatch, **overrides) -> tuple[dict, pathlib.Path]:
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"cleanrl_pave.{script}")
    settings = dict(env_id=env_id, total_timesteps=300, learning_starts=100, hidden_sizes=(32, 32), eval_freq=0,
                    eval_episodes=1, run_name=f"{script}_{env_id}", seed=1, **eager(module))
    settings.update(overrides)
    return module.main(module.Args(**settings)), tmp_path / "runs" / settings["run_name"]


def scalars(run_dir: pathlib.Path) -> dict[str, list]:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [event.value for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_train_on_hopper_and_log_the_terms(script, tmp_path, monkeypatch):
    """Past learning_starts on a MuJoCo env with the paper's Hopper weights (the Pendulum runs of every script are in test_exact_resume)."""
    results, run_dir = tiny_run(script, "Hopper-v5", tmp_path, monkeypatch)
    assert results["global_step"] == 300
    assert results["config"]["lam_mpr"] == (0.1 if script.startswith("td3") else 2.0)
    logged = scalars(run_dir)
    for name in ("losses/pave_mpr", "losses/pave_vfc", "losses/pave_curv"):
        assert logged[name] and all(value > 0 for value in logged[name]), name


@pytest.mark.parametrize("script", SCRIPTS)
def test_all_zero_weights_reproduce_the_base_run(script, tmp_path, monkeypatch, capsys):
    """No PAVE randomness is drawn and the loss is the TD loss, so the run is the base's, update for update; with
    the default --pave-compile nothing is compiled either (a compiled forward need not match the eager one bit for
    bit)."""
    base = script.replace("_pave", "")
    base_results, base_dir = tiny_run(base, "Pendulum-v1", tmp_path, monkeypatch, save_model=True)
    pave_results, pave_dir = tiny_run(script, "Pendulum-v1", tmp_path, monkeypatch, save_model=True,
                                      lam_mpr=0.0, lam_vfc=0.0, lam_curv=0.0, pave_compile=True)
    assert "compiled the PAVE loss" not in capsys.readouterr().out
    assert pave_results["eval"]["episode_returns"] == base_results["eval"]["episode_returns"]
    base_model = torch.load(base_dir / f"{base}.cleanrl_model", weights_only=False)
    pave_model = torch.load(pave_dir / f"{script}.cleanrl_model", weights_only=False)
    for key, value in base_model["qf"].items():
        assert torch.equal(pave_model["qf"][key], value), key


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_non_finite_loss_stops_the_run_after_a_checkpoint(script, tmp_path, monkeypatch):
    """lambda_Curv = 3e38 overflows lambda * Curv to inf in float32 (Curv >= delta per critic): the run stops at the
    logging interval with a message naming the term, the overflowing updates were skipped, and the checkpoint holds
    a finite critic to resume from."""
    with pytest.raises(SystemExit, match=r"non-finite loss \(losses/pave_curv, losses/qf_loss\) in an update "
                                         r"between steps 101 and 200"):
        tiny_run(script, "Pendulum-v1", tmp_path, monkeypatch, lam_curv=3e38)
    checkpoint = torch.load(next((tmp_path / "runs").glob("*/checkpoint.pt")), weights_only=False)
    assert checkpoint["global_step"] == 200
    assert all(torch.isfinite(value).all() for value in checkpoint["qf"].values())


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_run_stopped_at_its_last_step_keeps_that_evaluation_and_resumes(script, tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="non-finite loss"):
        tiny_run(script, "Pendulum-v1", tmp_path, monkeypatch, lam_curv=3e38, total_timesteps=200, eval_freq=100)
    checkpoint = torch.load(next((tmp_path / "runs").glob("*/checkpoint.pt")), weights_only=False)
    assert checkpoint["global_step"] == 200
    assert [entry["step"] for entry in checkpoint["eval_history"]] == [100, 200]
    results, _ = tiny_run(script, "Pendulum-v1", tmp_path, monkeypatch, total_timesteps=200, eval_freq=100,
                          resume=True)
    assert results["global_step"] == 200 and len(results["eval"]["episode_returns"]) == 1
    assert [entry["step"] for entry in results["eval_history"]] == [100, 200]


@pytest.mark.parametrize("script", SCRIPTS)
def test_weights_default_per_env_and_an_explicit_flag_wins(script):
    module = importlib.import_module(f"cleanrl_pave.{script}")
    paper = {  # the paper's Tables 7-8 (MPR, VFC, Curv), as README "The backbones" links them
        "td3_pave_continuous": {"Hopper-v5": (0.1, 0.005, 0.5), "Pendulum-v1": (2.0, 0.005, 2.0),
                                "Walker2d-v5": (0.1, 0.1, 0.01), "HalfCheetah-v5": (0.1, 0.1, 0.01)},
        "sac_pave_continuous": {"Hopper-v5": (2.0, 0.0005, 3.0), "LunarLanderContinuous-v3": (0.1, 0.5, 0.05),
                                "Walker2d-v5": (2.0, 0.005, 2.0), "HalfCheetah-v5": (0.1, 0.1, 0.01)},
    }[script]
    for env_id, weights in paper.items():
        args = module.resolve_pave_args(module.Args(env_id=env_id))
        assert (args.lam_mpr, args.lam_vfc, args.lam_curv) == weights, env_id
    args = module.resolve_pave_args(module.Args(env_id="Hopper-v5", lam_vfc=0.0))
    assert args.lam_vfc == 0.0 and args.pave_sigma == 0.01 and args.pave_delta == 1.0


def test_the_speed_benchmark_runs_every_mode(tmp_path, monkeypatch):
    """benchmark/measurements/critic_update_speed.py at its smallest: one timed update per mode (full-size SAC
    networks)."""
    benchmark = importlib.import_module("benchmark.measurements.critic_update_speed")
    output = tmp_path / "speed.json"
    monkeypatch.setattr(sys, "argv", ["critic_update_speed.py", "--algos", "sac", "--threads", "1", "--updates", "1",
                                      "--rounds", "1", "--no-pave-compile", "--json", str(output)])
    benchmark.main()
    (row,) = json.loads(output.read_text())
    assert {"base", "pave", "release", "release_stacked"} <= row.keys()
    assert all(row[mode] > 0 for mode in ("base", "pave", "release", "release_stacked"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_help_text_states_every_paper_weight(script):
    """`--help` says each weight's paper value per env ("(paper: 0.5 on Ant, Hopper; 0.01 on every other env)"), and
    those values are the ones the script resolves for every env of the paper and for an env outside it."""
    module = importlib.import_module(f"cleanrl_pave.{script}")
    result = subprocess.run([sys.executable, str(REPO / "cleanrl_pave" / f"{script}.py"), "--help"],
                            capture_output=True, text=True, timeout=120)
    help_text = " ".join(result.stdout.replace("\u2502", " ").split())  # without the box drawing of the layout
    assert "SPEC" not in help_text and "PAVE_ENV_WEIGHTS" not in help_text
    envs = ["Ant-v5", "Hopper-v5", "Humanoid-v5", "LunarLanderContinuous-v3", "Pendulum-v1", "Reacher-v5", "Walker2d-v5"]
    for flag in ("lam_mpr", "lam_vfc", "lam_curv"):
        stated = help_text.split(f"--{flag.replace('_', '-')} ")[1].split("(paper: ")[1].split(")")[0]
        per_env = {}
        for clause in stated.split("; "):
            value, names = clause.split(" on ", 1)
            for name in names.split(", "):
                per_env[name] = float(value)
        for env_id in envs:
            expected = getattr(module.resolve_pave_args(module.Args(env_id=env_id)), flag)
            short = env_id.split("-")[0].replace("Continuous", "")
            assert per_env.get(short, per_env["every other env"]) == expected, (flag, env_id, stated)
        assert per_env["every other env"] == getattr(module.resolve_pave_args(module.Args(env_id="Swimmer-v5")), flag)


def run_script(script: str, tmp_path, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """A tiny Pendulum run of `script` in a fresh process, its own inductor cache under tmp_path."""
    command = [sys.executable, str(REPO / "cleanrl_pave" / f"{script}.py"), "--env-id", "Pendulum-v1",
               "--total-timesteps", "300", "--learning-starts", "100", "--hidden-sizes", "32", "32", "--eval-freq",
               "150", "--eval-episodes", "1", "--save-model", *flags]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
                   **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=600)


def test_cudagraphs_on_a_cpu_compiles_the_losses_after_one_warning(tmp_path):
    """--cudagraphs without a GPU: one warning line, then the losses compiled as with --compile, and the run finishes.
    The TD3 base's two losses; the PAVE loss is compiled the same way and checked against the reference above, and
    every script has the same flag handling (the drift test)."""
    result = run_script("td3_continuous", tmp_path, "--cudagraphs", "--no-cuda")
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "warning: --cudagraphs needs a GPU; on the CPU the losses are only compiled"]
    compiled = [line for line in result.stdout.splitlines() if line.startswith("compiled ")]
    assert [line.split(" in ")[0] for line in compiled] == ["compiled the critic loss", "compiled the actor loss"]
    assert all(line.endswith(" s (once per process)") for line in compiled), compiled


def test_without_a_working_compiler_the_run_goes_on_eager_after_one_warning(tmp_path):
    """No C++ compiler (CXX points nowhere, an empty inductor cache): one warning line naming the reason and the flag
    that silences it, then the run finishes eager, with exactly the results of --no-pave-compile."""
    fallback = run_script("td3_pave_continuous", tmp_path, "--run-name", "fallback", env={"CXX": "/nonexistent/c++"})
    assert fallback.returncode == 0, fallback.stderr
    warnings = [line for line in fallback.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: could not compile the PAVE loss (")
    assert "C++ compiler" in warnings[0] and "--no-pave-compile" in warnings[0]
    eager_run = run_script("td3_pave_continuous", tmp_path, "--run-name", "eager", "--no-pave-compile")
    assert eager_run.returncode == 0 and not eager_run.stderr.strip() and "compiled" not in eager_run.stdout
    results = [json.loads((tmp_path / "runs" / name / "results.json").read_text()) for name in ("fallback", "eager")]
    assert results[0]["eval"] == results[1]["eval"] and results[0]["eval_history"] == results[1]["eval_history"]
