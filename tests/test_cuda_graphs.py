"""`--cudagraphs`: what it relies on that a CPU can check, and, on a GPU only (skipped elsewhere; the device call
`benchmark/measurements/graph_check.sh` runs them), PAVE's terms replayed as a CUDA graph against the autograd
reference. The GPU check itself (`benchmark/measurements/graph_check.py`, README "GPU") compares replayed training
with eager training loss by loss."""

import re

import pytest
import torch

from cleanrl_pave.compiling import compile_with_fallback
from cleanrl_pave.cuda_graphs import WARMUP_CALLS, CudaGraphed
from cleanrl_pave.nonfinite_guard import NonFiniteGuard
from tests.helpers import PACKAGE, SCRIPTS
from tests.test_pave import critic_and_batch, critic_fn, reference_terms, relative_error

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="records CUDA graphs: needs a GPU")


def test_the_non_finite_guard_accumulates_its_flags_in_place():
    """A CUDA graph records the guard's check once and replays it, so the flags it accumulates into must stay the same
    tensor from check to check, and a flag raised by one replay must survive the next, clean one."""
    guard = NonFiniteGuard()
    guard.check(qf1_loss=torch.tensor(1.0), qf2_loss=torch.tensor(float("nan")))
    flags = guard.flags[("qf1_loss", "qf2_loss")]
    found_inf = guard.check(qf1_loss=torch.tensor(float("inf")), qf2_loss=torch.tensor(2.0))
    clean = guard.check(qf1_loss=torch.tensor(3.0), qf2_loss=torch.tensor(4.0))
    assert guard.flags[("qf1_loss", "qf2_loss")] is flags and flags.tolist() == [True, True]
    assert (found_inf.item(), clean.item()) == (1.0, 0.0)
    assert "(losses/qf1_loss, losses/qf2_loss)" in guard.stop_message(10, "runs/x/checkpoint.pt")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_update_and_the_acting_policy_are_recorded_with_the_run_generator(script):
    """Each script records exactly its update functions and `act`, all with the run's generator (a replay that drew
    from an unregistered generator would repeat the same noise at every step), and only when `graphs` is on."""
    text = (PACKAGE / f"{script}.py").read_text()
    defined = re.findall(r"^    def (update\w*|act)\(", text, re.MULTILINE)
    recorded = re.findall(r"^        (\w+) = CudaGraphed\((\w+), torch_generator, \"[^\"]+\"\)$", text, re.MULTILINE)
    assert sorted(defined) == sorted(name for name, _ in recorded) and all(a == b for a, b in recorded), recorded
    assert "    if graphs:  # --cudagraphs on a GPU" in text
    assert "capturable=graphs" in text and 'group["capturable"] = args.learning_rate, graphs' in text


def test_the_gpu_graph_check_compares_the_logged_losses_step_by_step(tmp_path):
    """The GPU check's comparison, on a CPU: two runs of one seed in the same mode agree exactly at every logged step,
    and a run of another seed differs at every step, so a replay that trained differently would show."""
    from benchmark.measurements import graph_check

    device = ["--no-cuda", "--hidden-sizes", "32", "32"]
    same = graph_check.same_training("td3_continuous", "Pendulum-v1", 40, device, {"a": [], "b": []}, tmp_path / "a")
    assert same["ok"], same
    assert {"losses/qf1_loss", "losses/qf2_loss", "losses/qf_loss", "losses/actor_loss"} <= same["differences"].keys()
    assert all(row["points"] == 20 and row["max_abs"] == 0 for row in same["differences"].values())
    other = graph_check.same_training("td3_continuous", "Pendulum-v1", 40, device, {"a": [], "b": ["--seed", "2"]},
                                      tmp_path / "b")
    assert all(row["max_rel"] > 0 for row in other["differences"].values()), other


@needs_gpu
@pytest.mark.parametrize("script", ["td3_pave_continuous", "sac_pave_continuous"])
def test_pave_terms_replayed_as_a_cuda_graph_match_the_autograd_reference(script, capsys):
    """The PAVE loss as --cudagraphs runs it: compiled, recorded with its backward into the critic's gradients, and
    replayed on new batches copied into the graph's inputs. Every call (the eager warm-up ones, the recording and two
    replays) gives the terms and the parameter gradients of the release's autograd computation, in float64."""
    module, qf, _ = critic_and_batch(script)
    qf = qf.cuda()
    params = list(qf.parameters())
    weights, delta = (0.7, 1.3, 2.1), 0.3
    compiled = compile_with_fallback(module.pave_terms, "the PAVE loss", "--no-pave-compile")

    def step(data: dict) -> dict:
        terms = compiled(qf, data["obs"], data["actions"], data["state_noise"], data["next_obs"], data["probes"],
                         delta)
        loss = terms["q"].sum() + sum(weight * terms[name] for name, weight in zip(("mpr", "vfc", "curv"), weights))
        qf.zero_grad(set_to_none=True)
        loss.backward()
        return {name: terms[name].detach() for name in ("q", "mpr", "vfc", "curv")} | \
            {f"grad{index}": param.grad for index, param in enumerate(params)}

    graphed = CudaGraphed(step, torch.Generator("cuda"), "the PAVE step")
    for seed in range(WARMUP_CALLS + 3):
        data = {key: value.cuda() for key, value in critic_and_batch(script, seed=seed + 10)[2].items()}
        out = graphed(data)
        reference = reference_terms([critic_fn(qf, critic) for critic in range(2)], delta=delta, **data)
        reference_loss = reference["q"].sum() + sum(weight * reference[name] for name, weight
                                                    in zip(("mpr", "vfc", "curv"), weights))
        reference_grads = torch.autograd.grad(reference_loss, params)
        for name in ("q", "mpr", "vfc", "curv"):
            assert relative_error(out[name], reference[name].detach()) < 1e-6, (seed, name)
        for index, reference_grad in enumerate(reference_grads):
            assert relative_error(out[f"grad{index}"], reference_grad) < 1e-6, (seed, index)
    assert graphed.graph is not None and "recorded the PAVE step as a CUDA graph" in capsys.readouterr().out


@needs_gpu
def test_a_function_that_cannot_be_recorded_stops_the_run_with_one_line():
    """A host sync inside a recorded function invalidates the capture: the run stops with one line naming the function
    and the way out, and the device still works on the default stream afterwards."""
    x = torch.ones(3, device="cuda")
    graphed = CudaGraphed(lambda t: t * t.sum().item(), torch.Generator("cuda"), "a host-syncing step", warmup=1)
    assert graphed(x).sum().item() == 9.0  # the eager call
    with pytest.raises(SystemExit) as stop:
        graphed(x)
    message = str(stop.value)
    assert len(message.splitlines()) == 1 and message.startswith("error: could not record a host-syncing step as a "
                                                                 "CUDA graph (") and "without --cudagraphs" in message
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    assert (x * 2).sum().item() == 6.0


@needs_gpu
def test_a_replay_copies_new_values_in_and_refuses_another_shape():
    """Each replay computes on the values it was called with and continues the registered generator's stream as eager
    draws would; an argument of another shape than the recorded one is refused, not broadcast."""
    generator = torch.Generator("cuda").manual_seed(0)
    graphed = CudaGraphed(lambda batch: {"doubled": 2 * batch["x"], "noise": torch.randn(2, generator=generator,
                                                                                          device="cuda")},
                          generator, "a small step", warmup=1)
    outputs = [graphed({"x": torch.full((4,), float(value), device="cuda")}) for value in range(4)]
    # call 0 ran eager, call 1 recorded and replayed, calls 2 and 3 replayed into the same output tensors
    assert outputs[0]["doubled"].tolist() == [0.0] * 4 and outputs[-1]["doubled"].tolist() == [6.0] * 4
    eager = torch.Generator("cuda").manual_seed(0)
    draws = torch.stack([torch.randn(2, generator=eager, device="cuda") for _ in range(4)])
    assert torch.equal(outputs[-1]["noise"], draws[-1])  # the replays continued the generator's stream
    with pytest.raises(ValueError, match="shape"):
        graphed({"x": torch.zeros(5, device="cuda")})
