"""Deterministic evaluation, the spectral smoothness score and the results.json every script writes.

Shared by all training scripts so that every method is measured by exactly the same code (README: Evaluation and
smoothness).
As a command line it evaluates saved policies of any script side by side:

    python -m cleanrl_pave.evaluation --model base=runs/A/td3_continuous.cleanrl_model \
        --model pave=runs/B/td3_pave_continuous.cleanrl_model [--episodes 10] [--video DIR] [--plot-actions FILE.png]
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from cleanrl_pave.checkpointing import atomic_write, atomic_write_json, load_agent

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


# The TensorBoard scalar of each summary number, logged at every evaluation (README: What a run writes), and the
# numbers of each evaluation that results.json's eval_history keeps
EVAL_SCALARS = {"return_mean": "eval/episodic_return", "smoothness_mean": "eval/smoothness",
                "action_change_mean": "eval/action_change"}
HISTORY_KEYS = ("return_mean", "return_std", "smoothness_mean", "smoothness_std", "action_change_mean")


def log_evaluation(writer, summary: dict, step: int) -> dict:
    """Write a `summarize`d evaluation's eval/* scalars at `step`; returns its entry of results.json's eval_history."""
    for key, tag in EVAL_SCALARS.items():
        writer.add_scalar(tag, summary[key], step)
    return {"step": step, **{key: summary[key] for key in HISTORY_KEYS}}


def write_results(path: str, *, script: str, config: dict, run_name: str, global_step: int, wall_time_s: float,
                  sps: float, final_eval: dict, eval_history: list[dict], segments: list[dict]) -> dict:
    """Write the run's results.json atomically (a reader never sees half a file) and return its content. `segments`
    says which code, libraries and machine trained which steps: one entry per process (cleanrl_pave.provenance)."""
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
        "segments": segments,
    }
    atomic_write_json(path, results)
    return results


# ---------------------------------------------------------------------------------- command line: saved policies


def saved_policy(module, actor, env: gym.Env) -> Callable[[np.ndarray], np.ndarray]:
    """The deterministic env-scale policy of a reloaded actor, computed as its training script's evaluation does."""
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)

    def policy(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            action = actor.deterministic_action(torch.as_tensor(obs, dtype=torch.float32)[None])[0]
        return module.to_env_action(action.numpy(), low, high)

    return policy


def recording_env(env_id: str, folder: str, name_prefix: str) -> gym.Env:
    """An env that writes every episode to `folder` as `<name_prefix>-episode-<i>.mp4`."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # frames need no window (else SDL prints an XDG "error")
    env = gym.make(env_id, render_mode="rgb_array")
    try:
        return gym.wrappers.RecordVideo(env, folder, episode_trigger=lambda _: True, name_prefix=name_prefix,
                                        disable_logger=True)
    except gym.error.DependencyNotInstalled as error:
        raise SystemExit(f"error: --video needs MoviePy: pip install 'cleanrl_pave[video]' ({error})")


def parse_model(spec: str) -> tuple[str | None, str]:
    """`[LABEL=]PATH` -> (label or None, path); an existing path containing '=' stays a path."""
    label, separator, path = spec.partition("=")
    return (label, path) if separator and label and not os.path.exists(spec) else (None, spec)


def format_table(rows: list[dict]) -> str:
    """One line per model: return, smoothness and mean action change as mean (population std) over its episodes."""
    header = ["model", "script", "env", "episodes", "reset seeds", "return mean (std)", "sm mean (std)",
              "|da| mean (std)", "file"]
    body = [[row["label"], row["script"], row["env_id"], str(len(row["episode_returns"])),
             f"{row['seed']}-{row['seed'] + len(row['episode_returns']) - 1}",
             f"{row['return_mean']:.2f} ({row['return_std']:.2f})",
             f"{row['smoothness_mean']:.4f} ({row['smoothness_std']:.4f})",
             f"{row['action_change_mean']:.4f} ({np.std(row['episode_action_change']):.4f})", row["model"]]
            for row in rows]
    widths = [max(len(cells[column]) for cells in [header, *body]) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()
                     for cells in [header, *body])


def plot_action_traces(figure_class, traces: list[dict], env_id: str, seed: int, path: str) -> None:
    """One column per model; per action dim, a row of its env-scale actions over one episode and a row of the
    change |a_t - a_(t-1)|, which shows what `sm` alone can hide (a constant or step-by-step alternating action
    scores sm 0: README, Evaluation and smoothness)."""
    act_dim = traces[0]["actions"].shape[1]
    figure = figure_class(figsize=(max(3.6 * len(traces), 6.0), 3.0 * act_dim + 0.3 * len(traces) + 1.2),
                          layout="constrained")
    axes = figure.subplots(2 * act_dim, len(traces), sharex=True, sharey="row", squeeze=False,
                           gridspec_kw={"height_ratios": [2, 1] * act_dim})
    for column, trace in enumerate(traces):
        color = f"C{column % 10}"
        for dim in range(act_dim):
            actions, changes = axes[2 * dim, column], axes[2 * dim + 1, column]
            actions.plot(trace["actions"][:, dim], color=color, linewidth=1.0,
                         label=f"{trace['label']}: sm {trace['smoothness']:.4f}, |da| {trace['action_change']:.4f}, "
                               f"return {trace['return']:.1f}")
            changes.plot(range(1, len(trace["actions"])), np.abs(np.diff(trace["actions"][:, dim])), color=color,
                         linewidth=0.8)
            for axis in (actions, changes):
                axis.grid(alpha=0.3)
            if column == 0:
                actions.set_ylabel(f"action {dim}")
                changes.set_ylabel(f"|change {dim}|")
        axes[0, column].set_title(trace["label"])
        axes[-1, column].set_xlabel("step")
    handles = [axes[0, column].get_legend_handles_labels() for column in range(len(traces))]
    figure.legend([h[0][0] for h in handles], [h[1][0] for h in handles], loc="outside lower center")
    figure.suptitle(f"{env_id}: deterministic actions of one episode (reset seed {seed})")
    extension = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    atomic_write(path, lambda file: figure.savefig(file, format=extension, dpi=120))


def main(argv: list[str] | None = None) -> list[dict]:
    """Command line entry point; returns one result dict per model (the table's numbers and every episode's)."""
    parser = argparse.ArgumentParser(
        prog="python -m cleanrl_pave.evaluation",
        description="Return and smoothness (sm) of saved policies of any script: deterministic episodes seeded as "
                    "in training's evaluation, one table row per model, optional videos and an action-trace plot.")
    # --model is checked after parsing, not with required=True: argparse reports a missing required flag before an
    # unknown one, so a misspelt `--modle` read "--model is required"
    parser.add_argument("--model", action="append", metavar="[LABEL=]PATH",
                        help="a .cleanrl_model file or checkpoint.pt of any script; repeat to compare (required)")
    parser.add_argument("--episodes", type=int, default=10, help="deterministic episodes per model (default: 10)")
    parser.add_argument("--seed", type=int, default=None,
                        help=(f"episode i resets with seed + i for every model (default: each model's training seed + "
                              f"{EVAL_SEED_OFFSET}, the seeds its run evaluated with)"))
    parser.add_argument("--video", metavar="DIR", help="record every episode to DIR/<label>/ (the [video] extra)")
    parser.add_argument("--plot-actions", metavar="FILE.png",
                        help="draw one episode's actions per model side by side, same reset seed (the [plot] extra)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    options = parser.parse_args(argv)
    if not options.model:
        parser.error("the following arguments are required: --model")
    if options.episodes <= 0 or options.threads <= 0:
        parser.error(f"--episodes and --threads must be positive, got {options.episodes} and {options.threads}")
    figure_class = None
    if options.plot_actions:
        try:
            from matplotlib.figure import Figure as figure_class  # pyplot-free: Agg, no global state
        except ImportError as error:
            raise SystemExit(f"error: --plot-actions needs matplotlib: pip install 'cleanrl_pave[plot]' ({error})")
    torch.set_num_threads(options.threads)

    models = []
    for label, path in map(parse_model, options.model):
        module, args, actor, _, _ = load_agent(path)
        models.append({"label": label or args.exp_name, "model": path, "module": module, "args": args, "actor": actor})
    for index, model in enumerate(models):  # make labels unique: a second td3_continuous becomes td3_continuous#2
        earlier = sum(other["label"].split("#")[0] == model["label"] for other in models[:index])
        if earlier:
            model["label"] = f"{model['label']}#{earlier + 1}"
    env_ids = sorted({model["args"].env_id for model in models})
    if options.plot_actions and len(env_ids) > 1:
        raise SystemExit(f"error: --plot-actions compares models on one env, got {', '.join(env_ids)}")

    results = []
    for model in models:
        module, args = model["module"], model["args"]
        seed = args.seed + EVAL_SEED_OFFSET if options.seed is None else options.seed
        env = module.make_env(args.env_id, seed)  # checks the env (ids, extras) with the script's own messages
        if options.video:
            env.close()
            env = recording_env(args.env_id, os.path.join(options.video, model["label"]), model["label"])
        evaluation = evaluate(saved_policy(module, model["actor"], env), env, options.episodes, seed)
        env.close()
        results.append({"label": model["label"], "model": model["model"], "script": module.SCRIPT,
                        "env_id": args.env_id, "training_seed": args.seed, "seed": seed, **summarize(evaluation)})
    print(format_table(results))

    if options.plot_actions:
        seed = results[0]["seed"] if options.seed is None else options.seed
        traces = []
        for model in models:
            env = model["module"].make_env(env_ids[0], seed)
            episode = evaluate(saved_policy(model["module"], model["actor"], env), env, 1, seed)
            env.close()
            traces.append({"label": model["label"], "actions": episode["actions"][0],
                           "smoothness": episode["smoothness"][0], "action_change": episode["action_change"][0],
                           "return": episode["returns"][0]})
        plot_action_traces(figure_class, traces, env_ids[0], seed, options.plot_actions)
        print(f"wrote {options.plot_actions}")
    return results


if __name__ == "__main__":
    main()
