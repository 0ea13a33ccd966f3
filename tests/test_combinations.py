"""The combined methods of README "Baselines", CAPS + PAVE and PAVE + LipsNet: each is its base plus the method
blocks of the two single-method scripts, copied verbatim, so the combination is exactly the sum of the two methods."""

import dataclasses
import importlib
import pathlib

import pytest
import torch
import tyro

from tests.helpers import eager

from tests.helpers import method_blocks, method_scalars, scalars

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "cleanrl_pave"
COMBINATIONS = {
    "td3_caps_pave_continuous": ("td3_caps_continuous", "td3_pave_continuous"),
    "sac_caps_pave_continuous": ("sac_caps_continuous", "sac_pave_continuous"),
    "td3_pave_lipsnet_continuous": ("td3_pave_continuous", "td3_lipsnet_continuous"),
    "sac_pave_lipsnet_continuous": ("sac_pave_continuous", "sac_lipsnet_continuous"),
}
PAPER_ENVS = ["Ant-v5", "Hopper-v5", "Humanoid-v5", "LunarLanderContinuous-v3", "Pendulum-v1", "Reacher-v5",
              "Walker2d-v5", "HalfCheetah-v5"]
OBS_DIM, ACT_DIM, BATCH = 4, 2, 9


def load(script: str):
    return importlib.import_module(f"cleanrl_pave.{script}")


def block_bodies(script: str) -> list[list[str]]:
    """The lines inside each method block of a script, markers excluded."""
    lines = (PACKAGE / f"{script}.py").read_text().splitlines()
    return [lines[first + 1 : last] for first, last in method_blocks(lines)]


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_combination_blocks_are_the_two_methods_blocks_verbatim(combination):
    """Every block of both single-method scripts (but their one-paragraph summaries at the top of the file) appears, in
    one piece, inside the combination's blocks, and the combination's blocks hold nothing else but its own summary."""
    combined = block_bodies(combination)
    summary = [line for line in combined[0] if combination.split("_")[0].upper() in line and " + " in line]
    assert summary, "the header block names the combination"
    unused = [list(body) for body in combined]
    for single in COMBINATIONS[combination]:
        for body in block_bodies(single)[1:]:  # [0]: the single script's summary, which the combination's replaces
            for candidate in unused:
                starts = [i for i in range(len(candidate) - len(body) + 1) if candidate[i : i + len(body)] == body]
                if starts:
                    del candidate[starts[0] : starts[0] + len(body)]
                    break
            else:
                pytest.fail(f"a block of {single}.py is not in {combination}.py verbatim: {body[:2]}")
    leftover = [line for body in unused for line in body]
    assert leftover == combined[0] and len(leftover) <= 4 and all(line.startswith("# ") for line in leftover), leftover


def random_batch(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(BATCH, OBS_DIM, generator=generator),
            "actions": torch.rand(BATCH, ACT_DIM, generator=generator) * 2 - 1,
            "next_obs": torch.randn(BATCH, OBS_DIM, generator=generator)}


def same_values_and_gradients(first, second, inputs, params) -> None:
    """Two loss functions of the same inputs give the same values and the same parameter gradients."""
    values_first, values_second = first(*inputs), second(*inputs)
    assert len(values_first) == len(values_second)
    for value_first, value_second in zip(values_first, values_second):
        torch.testing.assert_close(value_first, value_second, rtol=0, atol=0)
        if value_first.requires_grad:
            grads_first = torch.autograd.grad(value_first.sum(), params, retain_graph=True, allow_unused=True)
            grads_second = torch.autograd.grad(value_second.sum(), params, retain_graph=True, allow_unused=True)
            for grad_first, grad_second in zip(grads_first, grads_second):
                assert (grad_first is None) == (grad_second is None)
                if grad_first is not None:
                    torch.testing.assert_close(grad_first, grad_second, rtol=0, atol=0)


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_regularizers_equal_the_single_method_scripts(combination):
    combo = load(combination)
    torch.manual_seed(0)
    args = combo.Args(hidden_sizes=(16, 16))
    actor, qf = combo.make_agent(args, OBS_DIM, ACT_DIM)
    data = random_batch(1)
    generator = torch.Generator().manual_seed(2)
    state_noise = 0.01 * torch.randn(BATCH, OBS_DIM, generator=generator)
    probes = torch.randint(0, 2, (BATCH, ACT_DIM), generator=generator).float() * 2 - 1
    for single_name in COMBINATIONS[combination]:
        single = load(single_name)
        if "pave" in single_name:
            def terms(module):
                return lambda *inputs: tuple(module.pave_terms(qf, *inputs, 1.0).values())
            same_values_and_gradients(terms(combo), terms(single), (data["obs"], data["actions"], state_noise,
                                                                    data["next_obs"], probes), list(qf.parameters()))
        if "caps" in single_name:
            caps_noise = 0.2 * torch.randn(BATCH, OBS_DIM, generator=generator)
            same_values_and_gradients(combo.caps_losses, single.caps_losses, (actor, data, caps_noise),
                                      list(actor.parameters()))
        if "lipsnet" in single_name:
            same_values_and_gradients(combo.lipsnet_k_penalty, single.lipsnet_k_penalty, (actor, data),
                                      list(actor.parameters()))
            # the same LipsNet actor: the single script's actor takes the combination's weights and acts alike
            single_actor, _ = single.make_agent(single.Args(hidden_sizes=(16, 16)), OBS_DIM, ACT_DIM)
            single_actor.load_state_dict(actor.state_dict())
            torch.testing.assert_close(single_actor.deterministic_action(data["obs"]),
                                       actor.deterministic_action(data["obs"]), rtol=0, atol=0)


def resolve(module, args):
    """The argument resolution main() runs: the base's, then each method's own resolve function."""
    args = module.resolve_args(args)
    for name in ("resolve_caps_args", "resolve_pave_args"):
        if hasattr(module, name):
            args = getattr(module, name)(args)
    return args


def method_fields(module) -> set[str]:
    base = load("td3_continuous" if module.__name__.split(".")[-1].startswith("td3") else "sac_continuous")
    return {field.name for field in dataclasses.fields(module.Args)} - \
        {field.name for field in dataclasses.fields(base.Args)}


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_both_methods_flags_exist_with_their_per_env_defaults(combination):
    combo = load(combination)
    singles = [load(name) for name in COMBINATIONS[combination]]
    assert method_fields(combo) == set().union(*(method_fields(single) for single in singles))
    for env_id in PAPER_ENVS:
        combined = resolve(combo, combo.Args(env_id=env_id))
        for single in singles:
            expected = resolve(single, single.Args(env_id=env_id))
            for name in method_fields(single):
                assert getattr(combined, name) == getattr(expected, name), (env_id, name)
    # an explicit flag of either method wins over its per-env default
    first_flags = {"caps": ["--lam-t", "0.3"], "pave": ["--lam-mpr", "0.3"]}[combination.split("_")[1]]
    second_flags = {"pave": ["--lam-curv", "0.7"], "lipsnet": ["--lam-k", "0.7"]}[combination.split("_")[2]]
    parsed = resolve(combo, tyro.cli(combo.Args, args=["--env-id", "Hopper-v5", *first_flags, *second_flags]))
    assert getattr(parsed, first_flags[0][2:].replace("-", "_")) == 0.3
    assert getattr(parsed, second_flags[0][2:].replace("-", "_")) == 0.7
    for flag in (first_flags[0], second_flags[0]):
        with pytest.raises(SystemExit, match=f"{flag} must be"):
            resolve(combo, tyro.cli(combo.Args, args=["--env-id", "Hopper-v5", flag, "-1"]))


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_combination_trains_past_learning_starts_and_logs_both_methods(combination, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    combo = load(combination)
    results = combo.main(combo.Args(env_id="Pendulum-v1", total_timesteps=300, learning_starts=100,
                                    hidden_sizes=(32, 32), eval_freq=0, eval_episodes=1, run_name="combo", seed=1,
                                    **eager(combo)))
    assert results["global_step"] == 300 and results["script"] == combination
    logged = scalars(tmp_path / "runs/combo")
    for single in COMBINATIONS[combination]:
        terms = method_scalars(single)
        assert terms and terms <= logged.keys(), f"{combination} does not log {sorted(terms - logged.keys())}"
        for term in terms:
            values = [event.value for event in logged[term]]
            assert len(values) == 2 and all(torch.isfinite(torch.tensor(values)))  # logged at steps 200 and 300
