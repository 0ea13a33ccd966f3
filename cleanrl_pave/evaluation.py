"""Deterministic evaluation, the spectral smoothness score and the results.json every script writes.

Shared by all training scripts so that every method is measured by exactly the same code (SPEC section 5).
"""

from __future__ import annotations

import math
from typing import Callable

import gymnasium as gym
import numpy as np

from cleanrl_pave.checkpointing import atomic_write_json

EVAL_SEED_OFFSET = 10_000
"""The evaluation env of a run with seed S resets episode i with seed S + EVAL_SEED_OFFSET + i: never a training seed
of the paper's seed list, and the same episodes at every evaluation of a run, so curves compare like with like."""


def smoothness_score(actions: np.ndarray) -> float:
    """Spectral smoothness `sm` of one episode's env-scale actions, shape (T, d_a) or (T,); lower is smoother.

    Per action dim: Y = FFT of the raw signal (no mean removal, no window), bins k = 0 .. floor(T/2) - 1,
    sm_dim = 2 / T^2 * sum_k k |Y_k|, i.e. the amplitude-weighted mean frequency normalised by the sampling
    rate. The score is the mean over dims. A sine with 100 periods in T = 1000 steps scores exactly 0.1.
    """
    signal = np.asarray(actions, dtype=np.float64)
    if signal.ndim == 1:
        signal = signal[:, None]
    if signal.ndim != 2:
        raise ValueError(f"actions must have shape (T,) or (T, d_a), got {signal.shape}")
    num_steps = signal.shape[0]
    if num_steps == 0:
        raise ValueError("actions must hold at least one step")
    num_bins = num_steps // 2
    magnitudes = np.abs(np.fft.fft(signal, axis=0)[:num_bins])
    per_dim = 2.0 / num_steps**2 * (np.arange(num_bins)[:, None] * magnitudes).sum(axis=0)
    return float(per_dim.mean())


def mean_action_change(actions: np.ndarray) -> float:
    """Mean absolute change between consecutive env-scale actions, over steps and dims (0 for a one-step episode)."""
    signal = np.asarray(actions, dtype=np.float64)
    if signal.shape[0] < 2:
        return 0.0
    return float(np.abs(np.diff(signal, axis=0)).mean())


def evaluate(policy: Callable[[np.ndarray], np.ndarray], env: gym.Env, episodes: int, seed: int) -> dict:
    """Run `episodes` episodes of a deterministic `policy` (observation -> env-scale action) on `env`.

    Episode i starts from `env.reset(seed=seed + i)`, so an evaluation is reproducible and independent of
    training. Returns per-episode lists `returns`, `lengths`, `smoothness`, `action_change`, and the raw
    `observations` and `actions` arrays (one (T, d) array per episode) for further analysis.
    """
    result = {key: [] for key in ("returns", "lengths", "smoothness", "action_change", "observations", "actions")}
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        observations, actions, episode_return, done = [], [], 0.0, False
        while not done:
            action = policy(obs)
            observations.append(obs)
            actions.append(action)
            obs, reward, terminated, truncated, _ = env.step(action)
            episode_return += float(reward)
            done = terminated or truncated
        actions = np.asarray(actions, dtype=np.float64)
        result["returns"].append(episode_return)
        result["lengths"].append(len(actions))
        result["smoothness"].append(smoothness_score(actions))
        result["action_change"].append(mean_action_change(actions))
        result["observations"].append(np.asarray(observations, dtype=np.float32))
        result["actions"].append(actions)
    return result


def summarize(evaluation: dict) -> dict:
    """The JSON-ready part of an `evaluate` result: per-episode lists plus means and population stds."""
    returns, smoothness = np.asarray(evaluation["returns"]), np.asarray(evaluation["smoothness"])
    return {
        "episode_returns": [float(x) for x in returns],
        "episode_smoothness": [float(x) for x in smoothness],
        "episode_lengths": [int(x) for x in evaluation["lengths"]],
        "episode_action_change": [float(x) for x in evaluation["action_change"]],
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "smoothness_mean": float(smoothness.mean()),
        "smoothness_std": float(smoothness.std()),
        "action_change_mean": float(np.mean(evaluation["action_change"])),
    }


def write_results(path: str, *, script: str, config: dict, run_name: str, global_step: int, wall_time_s: float,
                  sps: float, final_eval: dict, eval_history: list[dict]) -> dict:
    """Write the run's results.json atomically (a reader never sees half a file) and return its content."""
    results = {
        "script": script,
        "exp_name": config["exp_name"],
        "env_id": config["env_id"],
        "seed": config["seed"],
        "run_name": run_name,
        "total_timesteps": config["total_timesteps"],
        "global_step": global_step,
        "wall_time_s": wall_time_s,
        "sps": sps if math.isfinite(sps) else 0.0,
        "config": config,
        "eval": final_eval,
        "eval_history": eval_history,
    }
    atomic_write_json(path, results)
    return results
