"""Exact critic geometry (README: Critic geometry): input derivatives of a critic and the paper's geometry metrics.

Library use works on ANY critic given as a callable `q(obs (B, d_s), actions (B, d_a)) -> values (B,) or (B, 1)`:

- `action_gradient`  dQ/da,        (B, d_a)
- `mixed_hessian`    d2Q/da ds,    (B, d_a, d_s)   (row j is d/ds of dQ/da_j)
- `action_hessian`   d2Q/da2,      (B, d_a, d_a)
- metrics on them: `spectral_norms` (M), `negative_definite` (NDef), `concave_trace` (trace < -1),
  `consecutive_cosines` (cosine of dQ/da between steps t-1 and t of an episode).

All derivatives are exact (autograd) and vectorised over the batch: because the samples of a batch are
independent, d/d(input) of sum_b Q(s_b, a_b) is the per-sample gradient, so the full Hessians need one
first-order pass plus d_a second-order passes (one per action dim) for the whole batch. Measured on a 2-core
CPU, one thread, TD3 twin critic (400-300, SiLU) at Walker2d sizes: 1.4 s for 10,000 states, against 2.0 s for
one batched backward with `is_grads_batched`; torch.func vmap over a per-sample function ran out of memory on
the stacked twin critic. It needs nothing from the critic beyond independent samples (no batch-coupled layers
such as BatchNorm in training mode). Only `torch.autograd.grad` with respect to the INPUTS is used, so the
networks' `.grad` fields are never touched.

`geometry_metrics(q1, actor, episodes_obs)` is what the training scripts log live as `geometry/<key>`.

Command line, on a saved model or checkpoint of any script:

    python -m cleanrl_pave.critic_geometry --model runs/<run>/td3_continuous.cleanrl_model --episodes 10 \
        --output geometry.json

rolls out the deterministic policy (episode i reset with seed + i; default seed = training seed + 10,000, the
evaluation env's convention), evaluates Q1 at (s, pi(s)) in the SCALED action space [-1, 1] the critic was
trained on (README: Deliberate differences, item 1), prints a table and writes the metrics to a JSON file.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from cleanrl_pave.checkpointing import atomic_write_json, load_agent
from cleanrl_pave.evaluation import EVAL_SEED_OFFSET

Critic = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

CHUNK_SIZE = 4096
"""States per autograd call: bounds memory (about 0.1 GB per 1000 states for a twin 400-300 critic) at no
measurable cost in speed."""

TRACE_THRESHOLD = -1.0
"""The concavity (trace) rate counts states with tr(d2Q/da2) below this value (README: Critic geometry)."""

METRIC_KEYS = ("M_sup", "M_mean", "ndef_rate", "trace_rate", "cos_mean", "flip_rate")


class CriticDerivatives(NamedTuple):
    """Exact input derivatives of a critic at a batch of (state, action) pairs; a field is None if not asked for."""

    action_gradient: torch.Tensor  # (B, d_a)
    mixed_hessian: torch.Tensor | None  # (B, d_a, d_s)
    action_hessian: torch.Tensor | None  # (B, d_a, d_a)


def _values(q: Critic, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """q(obs, actions) as a (B,) tensor, rejecting outputs that are not one value per sample."""
    values = q(obs, actions)
    if values.numel() != obs.shape[0]:
        raise ValueError(f"the critic must return one value per sample (shape (B,) or (B, 1)); "
                         f"got shape {tuple(values.shape)} for a batch of {obs.shape[0]}")
    return values.reshape(obs.shape[0])


def _derivatives_of_chunk(q: Critic, obs: torch.Tensor, actions: torch.Tensor, mixed: bool,
                          action: bool) -> CriticDerivatives:
    """Derivatives for one chunk: one first-order pass, then one second-order pass per action dim."""
    obs = obs.detach().requires_grad_(True)
    actions = actions.detach().requires_grad_(True)
    wrt = {name: tensor for name, tensor, wanted in (("mixed", obs, mixed), ("action", actions, action)) if wanted}
    (gradient,) = torch.autograd.grad(_values(q, obs, actions).sum(), actions, create_graph=bool(wrt),
                                      materialize_grads=True)
    rows = {name: [] for name in wrt}
    act_dim = actions.shape[1]
    for j in range(act_dim if wrt else 0):
        if gradient.requires_grad:
            row = torch.autograd.grad(gradient[:, j].sum(), list(wrt.values()), retain_graph=j < act_dim - 1,
                                      materialize_grads=True)
        else:  # dQ/da depends on nothing (Q is affine in a with constant slope): every second derivative is 0
            row = [torch.zeros_like(tensor) for tensor in wrt.values()]
        for name, part in zip(wrt, row):
            rows[name].append(part)
    return CriticDerivatives(
        gradient.detach(),
        torch.stack(rows["mixed"], 1).detach() if mixed else None,
        torch.stack(rows["action"], 1).detach() if action else None,
    )


def critic_derivatives(q: Critic, obs: torch.Tensor, actions: torch.Tensor, mixed: bool = True, action: bool = True,
                       chunk_size: int = CHUNK_SIZE) -> CriticDerivatives:
    """Exact dQ/da and, as asked, d2Q/da ds and d2Q/da2 of critic `q` at every row of (obs, actions)."""
    if obs.dim() != 2 or actions.dim() != 2 or obs.shape[0] != actions.shape[0]:
        raise ValueError(f"obs and actions must have shapes (B, d_s) and (B, d_a); "
                         f"got {tuple(obs.shape)} and {tuple(actions.shape)}")
    with torch.enable_grad():  # callers may sit inside torch.no_grad()
        chunks = [_derivatives_of_chunk(q, obs[start:start + chunk_size], actions[start:start + chunk_size],
                                        mixed, action)
                  for start in range(0, obs.shape[0], chunk_size)]
    return CriticDerivatives(*(torch.cat(parts) if parts[0] is not None else None for parts in zip(*chunks)))


def action_gradient(q: Critic, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """dQ/da at each (s, a): shape (B, d_a)."""
    return critic_derivatives(q, obs, actions, mixed=False, action=False).action_gradient


def mixed_hessian(q: Critic, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """d2Q/da ds at each (s, a): shape (B, d_a, d_s), entry [b, j, i] = d2Q / da_j ds_i."""
    return critic_derivatives(q, obs, actions, mixed=True, action=False).mixed_hessian


def action_hessian(q: Critic, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """d2Q/da2 at each (s, a): shape (B, d_a, d_a)."""
    return critic_derivatives(q, obs, actions, mixed=False, action=True).action_hessian


def spectral_norms(matrices: torch.Tensor) -> torch.Tensor:
    """Largest singular value of each matrix of a (B, m, n) batch: shape (B,)."""
    return torch.linalg.matrix_norm(matrices, ord=2)


def negative_definite(action_hessians: torch.Tensor) -> torch.Tensor:
    """Whether each symmetrised d2Q/da2 has all eigenvalues < 0 (NDef): bool, shape (B,)."""
    symmetric = 0.5 * (action_hessians + action_hessians.transpose(-1, -2))
    return torch.linalg.eigvalsh(symmetric)[:, -1] < 0


def concave_trace(action_hessians: torch.Tensor, threshold: float = TRACE_THRESHOLD) -> torch.Tensor:
    """Whether tr(d2Q/da2) < threshold at each state: bool, shape (B,)."""
    return action_hessians.diagonal(dim1=-2, dim2=-1).sum(-1) < threshold


def consecutive_cosines(gradients: torch.Tensor) -> torch.Tensor:
    """Cosine between the action gradients of steps t-1 and t of ONE episode, (T, d_a) -> (T-1,).

    A zero gradient gives cosine 0 (neither agreement nor a flip)."""
    return F.cosine_similarity(gradients[1:], gradients[:-1], dim=-1)


def summarize_geometry(derivatives: CriticDerivatives, episode_lengths: list[int]) -> dict[str, float]:
    """The README: Critic geometry metrics of derivatives taken along episodes stored back to back.

    Cosines are taken within each episode only (never across a boundary) and pooled over episodes;
    cos_mean and flip_rate are NaN when no episode has two steps."""
    norms = spectral_norms(derivatives.mixed_hessian)
    cosines = torch.cat([consecutive_cosines(gradients)
                         for gradients in torch.split(derivatives.action_gradient, episode_lengths)])
    has_pairs = cosines.numel() > 0
    return {
        "M_sup": norms.max().item(),
        "M_mean": norms.mean().item(),
        "ndef_rate": negative_definite(derivatives.action_hessian).double().mean().item(),
        "trace_rate": concave_trace(derivatives.action_hessian).double().mean().item(),
        "cos_mean": cosines.mean().item() if has_pairs else float("nan"),
        "flip_rate": (cosines < 0).double().mean().item() if has_pairs else float("nan"),
    }


def geometry_metrics(q1: Critic, actor: Callable[[torch.Tensor], torch.Tensor],
                     episodes_obs: list[torch.Tensor]) -> dict[str, float]:
    """Geometry of critic `q1` at (s, actor(s)) over the states of some episodes (README: Critic geometry).

    q1(obs, actions) -> (B,) is the first critic, actor(obs) -> (B, d_a) the deterministic action in the
    scaled space, episodes_obs one (T_i, d_s) tensor per episode, on the networks' device. Returns M_sup,
    M_mean (largest / mean spectral norm of d2Q/da ds), ndef_rate, trace_rate, cos_mean and flip_rate
    (cosines of dQ/da between consecutive steps of each episode, pooled). Network parameters get no gradient.
    """
    if not episodes_obs or any(len(episode) == 0 for episode in episodes_obs):
        raise ValueError("geometry_metrics needs at least one episode and no empty episode")
    obs = torch.cat(list(episodes_obs))
    with torch.no_grad():
        actions = actor(obs)
    derivatives = critic_derivatives(q1, obs, actions)
    return summarize_geometry(derivatives, [len(episode) for episode in episodes_obs])


def rollout_observations(policy: Callable[[torch.Tensor], torch.Tensor], env, episodes: int,
                         seed: int) -> list[torch.Tensor]:
    """States visited by a deterministic `policy` (obs (B, d_s) -> scaled action (B, d_a)) on `env`.

    Episode i is reset with seed + i, as in evaluation; the env gets low + (a + 1) / 2 * (high - low).
    Returns one float32 (T_i, d_s) tensor per episode holding the states the policy acted in."""
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    episodes_obs = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        states, done = [], False
        while not done:
            states.append(np.asarray(obs, dtype=np.float32))
            with torch.no_grad():
                action = policy(torch.from_numpy(states[-1]).unsqueeze(0))[0].double().numpy()
            obs, _, terminated, truncated, _ = env.step(low + (action + 1.0) * 0.5 * (high - low))
            done = terminated or truncated
        episodes_obs.append(torch.from_numpy(np.stack(states)))
    return episodes_obs


def evaluate_model(model_path: str, episodes: int = 10, seed: int | None = None) -> dict:
    """Geometry of the first critic of a saved model/checkpoint of any script along its own deterministic rollouts.

    Returns the metrics plus what identifies the run: `seed` is the TRAINING seed (as in results.json, so tables
    can group runs), `rollout_seed` the seed of the first rollout episode."""
    start_time = time.time()
    module, args, actor, qf, payload = load_agent(model_path)
    rollout_seed = args.seed + EVAL_SEED_OFFSET if seed is None else seed
    env = module.make_env(args.env_id, rollout_seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one state at a time: a second thread only adds synchronisation (measured 2x slower)
    try:
        episodes_obs = rollout_observations(actor.deterministic_action, env, episodes, rollout_seed)
    finally:
        torch.set_num_threads(threads)
        env.close()
    metrics = geometry_metrics(lambda obs, actions: qf(obs, actions)[0], actor.deterministic_action, episodes_obs)
    return {
        **metrics,
        "n_states": sum(len(episode) for episode in episodes_obs),
        "episodes": episodes,
        "script": payload["script"],
        "exp_name": args.exp_name,
        "env_id": args.env_id,
        "seed": args.seed,
        "rollout_seed": rollout_seed,
        "run_name": os.path.basename(os.path.dirname(os.path.abspath(model_path))),
        "global_step": payload.get("global_step", args.total_timesteps),
        "model": model_path,
        "time_s": time.time() - start_time,
    }


def format_table(result: dict) -> str:
    """A small two-column text table of the metrics, headed by what was measured."""
    lines = [(f"{result['script']} on {result['env_id']} (seed {result['seed']}): {result['n_states']} states "
              f"from {result['episodes']} episodes, rollout seed {result['rollout_seed']}, {result['time_s']:.1f} s")]
    lines += [f"  {key:<11}{result[key]:>14.6g}" for key in METRIC_KEYS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Command line entry point; returns the result dict it prints and (optionally) writes."""
    parser = argparse.ArgumentParser(
        prog="python -m cleanrl_pave.critic_geometry",
        description="Exact critic geometry (M_sup, NDef, trace and gradient-cosine rates) of a saved model "
                    "along its deterministic rollouts (README: Critic geometry).")
    # checked after parsing (not required=True), so that a misspelt `--modle` is reported as unknown, not as missing
    parser.add_argument("--model", help="a .cleanrl_model file or checkpoint.pt of any script (required)")
    parser.add_argument("--episodes", type=int, default=10,
                        help="number of deterministic rollout episodes (default: 10)")
    parser.add_argument("--seed", type=int, default=None,
                        help=(f"episode i is reset with seed + i (default: training seed + {EVAL_SEED_OFFSET}, "
                              "the evaluation env's seeds)"))
    parser.add_argument("--output", default=None, help="write the result to this JSON file (atomically)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (1, as in the training scripts, was fastest on a 2-core CPU)")
    options = parser.parse_args(argv)
    if not options.model:
        parser.error("the following arguments are required: --model")
    if options.episodes <= 0 or options.threads <= 0:
        parser.error(f"--episodes and --threads must be positive, got {options.episodes} and {options.threads}")
    if options.output and os.path.isdir(options.output):  # checked before the (long) rollouts, not after them
        parser.error(f"--output {options.output} is a directory; give a file name, e.g. {options.output}/geometry.json")
    torch.set_num_threads(options.threads)
    result = evaluate_model(options.model, options.episodes, options.seed)
    print(format_table(result))
    if options.output:
        atomic_write_json(options.output, result)
    return result


if __name__ == "__main__":
    main()
