"""3-D surfaces of the critic's mixed-Hessian norm ||d2Q1/da ds||_2 around one (state, action) point (README: Critic geometry).

One row per environment, one panel per method; every panel of a row shares its axes, reference point and z scale,
so heights compare directly. The protocol is the same for every environment and fixed in advance (README: Deliberate differences
item 5: the release picked its seeds per figure):

1. Base rollout. The FIRST model given is the Base. Its deterministic policy runs one episode on
   `make_env(env_id, REFERENCE_SEED)` reset with seed REFERENCE_SEED = 0; its visited states are the state batch.
2. Dominant pair. At every batch state s_t, with a_t = pi_base(s_t), the exact mixed Hessian of the Base Q1 is
   taken; the pair (state dim i, action dim j) maximising max_t |d2Q/ds_i da_j| is kept for every method.
3. Reference point. s_ref is the state at step REFERENCE_STEP = 100 of that episode (its last state if the
   episode is shorter), for every method; each method's grid is centred on its OWN action a_ref = pi_method(s_ref)
   (as the release does), so a panel shows that method's critic around the action its policy takes there.
4. Grid. 50 x 50 points: s_i over s_ref_i + [-1, 1] (raw observation units), a_j over a_ref_j + [-1.5, 1.5]
   (scaled action units, so the sweep may leave [-1, 1], as in the release); all other coordinates stay at
   (s_ref, a_ref).
5. Value. The spectral norm of the exact (autograd) d_a x d_s mixed Hessian of each method's Q1 at every grid
   point, all 2,500 points in one batched call (`cleanrl_pave.critic_geometry`).
6. Scale. Every panel of a row is clipped at the 99th percentile of that row's Base grid.

Usage (model paths of any script: .cleanrl_model files or checkpoint.pt):

    python plots/hessian_surface.py --env Walker2d-v5 \
        --models base=runs/w_base/td3_continuous.cleanrl_model pave=runs/w_pave/td3_pave_continuous.cleanrl_model \
        --out figs/walker_surface
    python plots/hessian_surface.py --grid Hopper-v5 Walker2d-v5 \
        --models 'base=runs/{env}__td3_continuous__1__*/td3_continuous.cleanrl_model' \
                 'pave=runs/{env}__td3_pave_continuous__1__*/td3_pave_continuous.cleanrl_model' --out figs/td3_surfaces

In --grid mode `{env}` in a model path is replaced by each env id, and a path with glob characters must match
exactly one file. Writes <out>.png, <out>.pdf and <out>.json (the chosen pair, reference point and z clip per env,
and each panel's centre action).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

if __package__ in (None, ""):
    # Run as `python plots/hessian_surface.py`: put the repository root on the path so `cleanrl_pave` resolves.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # pyplot-free: rendered by Agg, no global figure state
    from matplotlib.ticker import MaxNLocator
except ImportError as error:  # the [plot] extra is missing: say so in one line, as the scripts do for box2d
    sys.exit(f"error: {Path(__file__).name} needs the plotting extra: pip install 'cleanrl_pave[plot]' ({error})")

from cleanrl_pave.checkpointing import atomic_write_json, load_agent
from cleanrl_pave.critic_geometry import mixed_hessian, rollout_observations, spectral_norms

REFERENCE_SEED = 0
"""Seed of the Base rollout (env construction and its single episode's reset), the same for every env."""
REFERENCE_STEP = 100
"""Step of the Base rollout whose state is the reference state (the last state if the episode is shorter)."""
GRID_POINTS = 50
STATE_HALF_WIDTH = 1.0
ACTION_HALF_WIDTH = 1.5
CLIP_PERCENTILE = 99.0


@dataclass
class ReferencePoint:
    """A row's reference state and the coordinates its surfaces sweep; `action` is the Base's action there."""

    state_dim: int
    action_dim: int
    obs: torch.Tensor  # (d_s,)
    action: torch.Tensor  # (d_a,)
    step: int


@dataclass
class Surface:
    """One panel: mixed-Hessian norms over the grid, norms[k, l] at (state_values[l], action_values[k])."""

    method: str
    state_values: np.ndarray  # (GRID_POINTS,)
    action_values: np.ndarray  # (GRID_POINTS,)
    norms: np.ndarray  # (GRID_POINTS, GRID_POINTS)
    centre_action: np.ndarray  # (d_a,), the action the grid is centred on


def dominant_pair(q, obs: torch.Tensor, actions: torch.Tensor) -> tuple[int, int]:
    """(state dim i, action dim j) maximising |d2Q/ds_i da_j| over a batch of (state, action) pairs."""
    largest = mixed_hessian(q, obs, actions).abs().amax(0)  # (d_a, d_s)
    action_dim, state_dim = np.unravel_index(int(largest.argmax()), tuple(largest.shape))
    return int(state_dim), int(action_dim)


def choose_reference(q, policy, episode_obs: torch.Tensor) -> ReferencePoint:
    """Steps 2-3 of the protocol on the Base critic `q` and policy, given the Base rollout's states (T, d_s)."""
    with torch.no_grad():
        actions = policy(episode_obs)
    state_dim, action_dim = dominant_pair(q, episode_obs, actions)
    step = min(REFERENCE_STEP, len(episode_obs) - 1)
    return ReferencePoint(state_dim, action_dim, episode_obs[step], actions[step], step)


def hessian_surface(q, reference: ReferencePoint, method: str = "", points: int = GRID_POINTS) -> Surface:
    """Spectral norm of the exact mixed Hessian of `q` over the points x points grid around (reference.obs,
    reference.action)."""
    state_values = reference.obs[reference.state_dim] + torch.linspace(-STATE_HALF_WIDTH, STATE_HALF_WIDTH, points,
                                                                       dtype=reference.obs.dtype)
    action_values = reference.action[reference.action_dim] + torch.linspace(-ACTION_HALF_WIDTH, ACTION_HALF_WIDTH,
                                                                            points, dtype=reference.action.dtype)
    # row k of the grid holds action_values[k] with every state value, flattened row by row into one batch
    obs = reference.obs.repeat(points * points, 1)
    obs[:, reference.state_dim] = state_values.repeat(points)
    actions = reference.action.repeat(points * points, 1)
    actions[:, reference.action_dim] = action_values.repeat_interleave(points)
    norms = spectral_norms(mixed_hessian(q, obs, actions)).reshape(points, points)
    return Surface(method, state_values.numpy(), action_values.numpy(), norms.numpy(), reference.action.numpy())


def z_clip(base: Surface) -> float:
    """The row's shared z limit: the Base grid's 99th percentile (1.0 for a flat zero Base, e.g. a ReLU critic)."""
    clip = float(np.percentile(base.norms, CLIP_PERCENTILE))
    return clip if clip > 0 else 1.0


def _first_critic(qf):
    return lambda obs, actions: qf(obs, actions)[0]


def _resolve(path_template: str, env_id: str) -> str:
    """A model path with `{env}` filled in; a glob pattern must match exactly one file."""
    path = path_template.replace("{env}", env_id)
    if not glob.has_magic(path):
        return path
    matches = sorted(glob.glob(path))
    if len(matches) != 1:
        raise SystemExit(f"error: {path} matches {len(matches)} files, need exactly one: {matches}")
    return matches[0]


def env_surfaces(env_id: str, models: dict[str, str]) -> tuple[ReferencePoint, list[Surface]]:
    """The whole protocol for one env: load every model, choose the reference from the first (Base), sweep all."""
    loaded = {}
    for method, path_template in models.items():
        path = _resolve(path_template, env_id)
        module, _, actor, qf, payload = load_agent(path)
        if payload["env_id"] != env_id:
            raise SystemExit(f"error: {path} is a model for {payload['env_id']}, not {env_id}")
        loaded[method] = (module, actor, qf)
    base_module, base_actor, base_qf = next(iter(loaded.values()))
    env = base_module.make_env(env_id, REFERENCE_SEED)
    try:
        (episode_obs,) = rollout_observations(base_actor.deterministic_action, env, 1, REFERENCE_SEED)
    finally:
        env.close()
    reference = choose_reference(_first_critic(base_qf), base_actor.deterministic_action, episode_obs)
    surfaces = []
    for method, (_, actor, qf) in loaded.items():
        with torch.no_grad():  # each method's grid is centred on its own policy's action at the reference state
            own_action = actor.deterministic_action(reference.obs[None])[0]
        surfaces.append(hessian_surface(_first_critic(qf), replace(reference, action=own_action), method))
    return reference, surfaces


def plot_surfaces(rows: list[tuple[str, ReferencePoint, list[Surface]]], out: str) -> list[str]:
    """Draw one row of 3-D surfaces per env (first panel = Base, which sets the row's z clip); write PNG and PDF."""
    num_rows, num_cols = len(rows), max(len(surfaces) for _, _, surfaces in rows)
    figure = Figure(figsize=(3.6 * num_cols, 3.4 * num_rows))
    FigureCanvasAgg(figure)
    for row, (env_id, reference, surfaces) in enumerate(rows):
        clip = z_clip(surfaces[0])
        for col, surface in enumerate(surfaces):
            axes = figure.add_subplot(num_rows, num_cols, row * num_cols + col + 1, projection="3d")
            state_grid, action_grid = np.meshgrid(surface.state_values, surface.action_values)
            axes.plot_surface(state_grid, action_grid, np.minimum(surface.norms, clip), cmap="viridis", vmin=0.0,
                              vmax=clip, rstride=1, cstride=1, linewidth=0, antialiased=False)
            axes.set_zlim(0.0, clip)
            axes.set_title(f"{env_id}: {surface.method}", fontsize=9)
            axes.set_xlabel(f"state dim {reference.state_dim}", fontsize=7)
            axes.set_ylabel(f"action dim {reference.action_dim}", fontsize=7)
            axes.set_zlabel(r"$\|\nabla^2_{sa} Q_1\|_2$", fontsize=7)
            axes.tick_params(labelsize=6)
            axes.xaxis.set_major_locator(MaxNLocator(4))
            axes.yaxis.set_major_locator(MaxNLocator(4))
    figure.suptitle("Spectral norm of the exact mixed Hessian of Q1 (z clipped at the Base grid's 99th percentile)",
                    fontsize=10)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    written = [f"{out}.png", f"{out}.pdf"]
    for path in written:
        figure.savefig(path, dpi=150, bbox_inches="tight", pad_inches=0.2)
    return written


def describe(rows: list[tuple[str, ReferencePoint, list[Surface]]]) -> dict:
    """JSON-ready record of what each row shows: the pair, the reference point (with the Base's action there), the
    clip, and each panel's centre action and range of values."""
    return {env_id: {
        "state_dim": reference.state_dim, "action_dim": reference.action_dim, "reference_step": reference.step,
        "reference_seed": REFERENCE_SEED, "reference_obs": reference.obs.tolist(),
        "reference_action": reference.action.tolist(), "z_clip": z_clip(surfaces[0]),
        "methods": {surface.method: {"max": float(surface.norms.max()), "median": float(np.median(surface.norms)),
                                     "centre_action": surface.centre_action.tolist()} for surface in surfaces},
    } for env_id, reference, surfaces in rows}


def parse_models(entries: list[str]) -> dict[str, str]:
    """'name=path' entries to an ordered {name: path} dict (order = panel order; the first is the Base)."""
    models = {}
    for entry in entries:
        name, separator, path = entry.partition("=")
        if not separator or not name or not path:
            raise SystemExit(f"error: --models entries are name=path, got {entry!r}")
        if name in models:
            raise SystemExit(f"error: method {name!r} is given twice in --models")
        models[name] = path
    return models


def main(argv: list[str] | None = None) -> list[str]:
    """Command line entry point; returns the written figure paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--env", help="one env: a single row of panels")
    which.add_argument("--grid", nargs="+", metavar="ENV", help="several envs, one row each ({env} in model paths)")
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME=PATH",
                        help="method=model path, Base first (it picks the pair and reference point)")
    parser.add_argument("--out", required=True, help="output path without extension")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (1 was fastest on a 2-core CPU, as for the training scripts)")
    options = parser.parse_args(argv)
    if options.threads <= 0:
        parser.error(f"--threads must be positive, got {options.threads}")
    torch.set_num_threads(options.threads)
    models = parse_models(options.models)
    out = os.path.splitext(options.out)[0] if options.out.endswith((".png", ".pdf")) else options.out
    rows = []
    for env_id in options.grid or [options.env]:
        reference, surfaces = env_surfaces(env_id, models)
        rows.append((env_id, reference, surfaces))
        print(f"{env_id}: state dim {reference.state_dim} x action dim {reference.action_dim}, reference step "
              f"{reference.step}, z clip {z_clip(surfaces[0]):.4g}")
    written = plot_surfaces(rows, out)
    atomic_write_json(f"{out}.json", describe(rows))
    print("wrote " + ", ".join(written + [f"{out}.json"]))
    return written


if __name__ == "__main__":
    main()
