"""Time one critic update three ways: the base script's, PAVE's (this project's kernel) and the release's PAVE pattern.

The update is what a training step of the scripts does to the critic: sample a batch, the TD target (target actor or
policy sample, target critics), the TD loss (+ the PAVE terms), backward, and the fused Adam step.

- base:    the base script's update (`td3_continuous` / `sac_continuous` networks: the stacked twin critic);
- pave:    + the PAVE terms of `*_pave_continuous.pave_terms` (explicit reverse / forward-mode sweeps through the
           MLP over [s; s + eps; s'] in plain tensor ops, autograd's backward), compiled as the scripts compile it by
           default (--no-pave-compile: eager); its TD loss takes Q(s, a) from that forward, as the scripts do;
- release: the release's way of getting the same terms, as in its SB3 code: two separate critic networks, three
           twin-critic forwards (s, s + eps, s') with the action as a leaf, eight `autograd.grad(create_graph=True)`
           calls (dQ_i/da at three states, one Hessian-vector product per critic), then the triple backward;
- release_stacked: the same pattern on this project's stacked twin critic, where every per-critic autograd.grad
           runs through both critics' batched matmuls (what a straight port of the release to these scripts costs).

With --compile the base and PAVE updates also compile their TD losses, as the scripts do with --compile (the release
pattern stays eager: the release does not compile). Compilation happens in the warm-up, which is not timed; its
seconds are printed. Modes are interleaved round by round so
that background load hits all of them alike; the table shows the median time per update: wall-clock time, or with
--clock cpu this process's CPU time (steadier on a busy machine, meaningful for one thread only). The load average
printed before and after says how busy the machine was.

    python benchmark/measurements/critic_update_speed.py         # TD3 and SAC Hopper dims, 1 and 2 threads
    python benchmark/measurements/critic_update_speed.py --algos td3 --threads 1 --no-pave-compile
    python benchmark/measurements/critic_update_speed.py --algos td3 --hidden-sizes 256 256 --batch-size 256
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cleanrl_pave.compiling import compile_with_fallback  # noqa: E402 (after the path set-up above)
from cleanrl_pave.nonfinite_guard import NonFiniteGuard  # noqa: E402

# Hopper-v5 dims and the paper's Hopper PAVE weights per backbone (README: The backbones; paper Tables 7-8)
OBS_DIM, ACT_DIM = 11, 3
SETTINGS = {
    "td3": {"hidden": (400, 300), "batch": 256, "td_scale": 1.0, "weights": (0.1, 0.005, 0.5)},
    "sac": {"hidden": (256, 256), "batch": 100, "td_scale": 0.5, "weights": (2.0, 0.0005, 3.0)},
}
GAMMA, ALPHA, SIGMA, DELTA, REPLAY_SIZE = 0.99, 0.2, 0.01, 1.0, 10_000


class SeparateCritics(nn.Module):
    """The release's twin critic: two independent MLPs (SB3's ContinuousCritic); forward -> (Q1, Q2), each (B,)."""

    def __init__(self, hidden):
        super().__init__()
        sizes = [OBS_DIM + ACT_DIM, *hidden, 1]
        self.nets = nn.ModuleList()
        for _ in range(2):
            layers = []
            for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                layers += [nn.Linear(fan_in, fan_out)] + ([nn.SiLU()] if index < len(sizes) - 2 else [])
            self.nets.append(nn.Sequential(*layers))

    def forward(self, obs, actions):
        x = torch.cat([obs, actions], -1)
        return tuple(net(x).squeeze(-1) for net in self.nets)


def release_terms(critics: SeparateCritics, obs, actions, next_obs, state_noise, probes, delta):
    """The release's pattern: three twin-critic forwards, eight autograd.grad calls with create_graph."""
    actions = actions.clone().requires_grad_(True)
    q_clean, q_noisy, q_next = (critics(states, actions) for states in (obs, obs + state_noise, next_obs))
    mpr = vfc = curv = 0.0
    for critic in range(2):
        grads = [torch.autograd.grad(q[critic].sum(), actions, create_graph=True)[0]
                 for q in (q_clean, q_noisy, q_next)]
        mpr = mpr + F.mse_loss(grads[0], grads[1])
        vfc = vfc + F.mse_loss(grads[0], grads[2])
        (hessian_probe,) = torch.autograd.grad((grads[0] * probes).sum(), actions, create_graph=True)
        curv = curv + torch.relu((hessian_probe * probes).sum(-1) + delta).mean()
    return {"mpr": mpr, "vfc": vfc, "curv": curv}


def make_update(algo: str, mode: str, compile_losses: bool, compile_pave: bool, generator: torch.Generator,
                settings: dict):
    """A closure running one critic update of `mode` on fresh networks and a random replay buffer."""
    base = importlib.import_module(f"cleanrl_pave.{algo}_continuous")
    pave = importlib.import_module(f"cleanrl_pave.{algo}_pave_continuous")
    args = base.Args(hidden_sizes=settings["hidden"])
    actor, qf = base.make_agent(args, OBS_DIM, ACT_DIM)
    if mode == "release":
        qf = SeparateCritics(settings["hidden"])  # release_stacked keeps the script's stacked QNetwork
    actor_target, qf_target = copy.deepcopy(actor), copy.deepcopy(qf)
    optimizer = torch.optim.Adam(qf.parameters(), lr=1e-3, fused=True)
    replay = {"obs": torch.randn(REPLAY_SIZE, OBS_DIM, generator=generator),
              "actions": torch.rand(REPLAY_SIZE, ACT_DIM, generator=generator) * 2 - 1,
              "rewards": torch.randn(REPLAY_SIZE, generator=generator),
              "next_obs": torch.randn(REPLAY_SIZE, OBS_DIM, generator=generator),
              "dones": (torch.rand(REPLAY_SIZE, generator=generator) < 0.01).float()}
    lam_mpr, lam_vfc, lam_curv = settings["weights"]

    def td_losses(data, noise, q_values):
        """Per-critic TD losses (2,) of Q(s, a) `q_values` (2, B), as the base scripts' critic_loss_fn."""
        with torch.no_grad():
            if algo == "td3":
                next_actions = (actor_target(data["next_obs"]) + (noise * 0.2).clamp(-0.5, 0.5)).clamp(-1.0, 1.0)
                target = torch.stack(list(qf_target(data["next_obs"], next_actions))).min(0).values
            else:
                next_actions, next_log_pi = actor.get_action(data["next_obs"], noise)
                target = torch.stack(list(qf_target(data["next_obs"], next_actions))).min(0).values
                target = target - ALPHA * next_log_pi
            next_q = data["rewards"] + (1.0 - data["dones"]) * GAMMA * target
        return ((q_values - next_q) ** 2).mean(1)

    if compile_losses:
        td_losses = compile_with_fallback(td_losses, "the critic loss", "running without --compile")
    pave_fn = compile_with_fallback(pave.pave_terms, "the PAVE loss", "--no-pave-compile") if compile_pave \
        else pave.pave_terms
    guard = NonFiniteGuard()

    def update():
        indices = torch.randint(REPLAY_SIZE, (settings["batch"],), generator=generator)
        data = {key: value[indices] for key, value in replay.items()}
        td_noise = torch.randn(data["actions"].shape, generator=generator)
        loss = 0.0
        if mode != "base":
            noise = SIGMA * torch.randn(data["obs"].shape, generator=generator)
            probes = torch.randint(0, 2, data["actions"].shape, generator=generator, dtype=torch.float32) * 2 - 1
            if mode == "pave":
                terms = pave_fn(qf, data["obs"], data["actions"], noise if lam_mpr else None,
                                data["next_obs"] if lam_vfc else None, probes if lam_curv else None, DELTA)
            else:
                terms = release_terms(qf, data["obs"], data["actions"], data["next_obs"], noise, probes, DELTA)
            weighted = {"pave_mpr": lam_mpr * terms["mpr"], "pave_vfc": lam_vfc * terms["vfc"],
                        "pave_curv": lam_curv * terms["curv"]}
            loss = sum(weighted.values())
            guard.check(**weighted)
        # the PAVE scripts take Q(s, a) from the PAVE forward; the others run the critics on (s, a)
        q_values = terms["q"] if mode == "pave" else torch.stack(list(qf(data["obs"], data["actions"])))
        loss = loss + settings["td_scale"] * td_losses(data, td_noise, q_values).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.found_inf = guard.check(qf_loss=loss)  # the scripts' sync-free NaN/Inf guard, in every mode
        optimizer.step()

    return update


def measure(algo: str, threads: int, compile_losses: bool, compile_pave: bool, updates: int, rounds: int, clock,
            settings: dict) -> dict[str, float]:
    """Median time (ms, by `clock`) of one critic update per mode, modes interleaved round by round."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    modes = ["base", "pave", "release", "release_stacked"]
    updaters = {mode: make_update(algo, mode, compile_losses, compile_pave, generator, settings) for mode in modes}
    for update in updaters.values():  # warm-up (and compilation)
        for _ in range(5):
            update()
    samples = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode, update in updaters.items():
            for _ in range(updates):
                start = clock()
                update()
                samples[mode].append(clock() - start)
    return {mode: 1e3 * statistics.median(values) for mode, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", choices=sorted(SETTINGS), default=["td3", "sac"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--compile", action="store_true", help="also compile the TD losses (the scripts' --compile)")
    parser.add_argument("--no-pave-compile", dest="pave_compile", action="store_false",
                        help="run the PAVE terms eager (the scripts compile them by default)")
    parser.add_argument("--updates", type=int, default=20, help="timed updates per mode and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall-clock time, or this process's CPU time (one thread only)")
    parser.add_argument("--hidden-sizes", nargs="+", type=int, help="override the backbone's critic hidden sizes")
    parser.add_argument("--batch-size", type=int, help="override the backbone's batch size")
    parser.add_argument("--json", help="also write the table to this file")
    args = parser.parse_args()
    if min(args.updates, args.rounds, *args.threads, *(args.hidden_sizes or [1]), args.batch_size or 1) <= 0:
        raise SystemExit("error: --updates, --rounds, --threads, --hidden-sizes and --batch-size must be positive")
    if args.clock == "cpu" and max(args.threads) > 1:
        raise SystemExit("error: --clock cpu sums the CPU time of all threads; use it with --threads 1")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.clock} clock, load average {os.getloadavg()[0]:.2f}")
    rows = []
    print(f"{'algo':5s} {'threads':>7s} {'compile':>7s} {'base ms':>8s} {'pave ms':>8s} {'release ms':>10s} "
          f"{'rel. stacked ms':>15s} {'pave/base':>9s} {'release/pave':>12s} {'rel. stacked/pave':>17s}")
    for algo in args.algos:
        for threads in args.threads:
            settings = {**SETTINGS[algo], **({"hidden": tuple(args.hidden_sizes)} if args.hidden_sizes else {}),
                        **({"batch": args.batch_size} if args.batch_size else {})}
            times = measure(algo, threads, args.compile, args.pave_compile, args.updates, args.rounds, clock,
                            settings)
            row = {"algo": algo, "threads": threads, "compile": args.compile, "pave_compile": args.pave_compile,
                   "clock": args.clock,
                   "hidden_sizes": list(settings["hidden"]), "batch_size": settings["batch"], **times}
            rows.append(row)
            cells = [f"{times[mode]:{width}.2f}" if mode in times else f"{'-':>{width}s}"
                     for mode, width in (("release", 10), ("release_stacked", 15))]
            ratios = [f"{times[mode] / times['pave']:{width - 1}.2f}x" if mode in times else f"{'-':>{width}s}"
                      for mode, width in (("release", 12), ("release_stacked", 17))]
            print(f"{algo:5s} {threads:7d} {str(args.compile):>7s} {times['base']:8.2f} {times['pave']:8.2f} "
                  f"{cells[0]} {cells[1]} {times['pave'] / times['base']:8.2f}x {ratios[0]} {ratios[1]}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
