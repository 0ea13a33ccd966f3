"""What `--cudagraphs` relies on that a CPU can check. Recording and replaying need a GPU: the GPU check
(`benchmark/measurements/graph_equivalence.py`, README "GPU") compares replayed training with eager training there."""

import re

import pytest
import torch

from cleanrl_pave.nonfinite_guard import NonFiniteGuard
from tests.helpers import PACKAGE, SCRIPTS


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
