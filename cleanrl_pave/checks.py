"""Checks of what a run is given, shared by every script so that each script reads as its algorithm: flag ranges, and
the env a run asks for. Each failure is one line, before anything is written (README: Common flags)."""

from __future__ import annotations

import os
from typing import Optional

import gymnasium as gym
import numpy as np


def require_ranges(args, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """Stop with one line at the first flag out of range, in the order given: each of `positive` must be > 0 and each
    of `non_negative` >= 0 (NaN is neither)."""
    for names, in_range, words in ((positive, lambda value: value > 0, "positive"),
                                   (non_negative, lambda value: value >= 0, "non-negative")):
        for name in names:
            value = getattr(args, name)
            if not in_range(value):
                raise SystemExit(f"error: --{name.replace('_', '-')} must be {words}, got {value}")


def make_checked_env(env_id: str, video_folder: Optional[str] = None) -> gym.Env:
    """gym.make(env_id), recording every episode to `video_folder` when one is given; or one line saying why the env
    cannot be used: an unknown id, a missing extra (box2d, mujoco, video), a discrete or an unbounded action space."""
    if video_folder:  # rgb_array frames need no window: without one SDL would print an XDG_RUNTIME_DIR "error"
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        env = gym.make(env_id, render_mode="rgb_array" if video_folder else None)
    except gym.error.DependencyNotInstalled as error:
        extra = "box2d" if "box2d" in str(error).lower() else "mujoco"
        raise SystemExit(f"error: {env_id} needs an optional dependency: pip install 'cleanrl_pave[{extra}]' ({error})")
    except gym.error.Error as error:
        raise SystemExit(f"error: unknown environment id {env_id!r}: {error}")
    if not isinstance(env.action_space, gym.spaces.Box):
        raise SystemExit(f"error: {env_id} has a {type(env.action_space).__name__} action space; "
                         "these scripts need a continuous (Box) one")
    if not (np.all(np.isfinite(env.action_space.low)) and np.all(np.isfinite(env.action_space.high))):
        raise SystemExit(f"error: {env_id} has unbounded actions; the actor's tanh output needs finite bounds")
    if video_folder:
        try:
            env = gym.wrappers.RecordVideo(env, video_folder)
        except gym.error.DependencyNotInstalled as error:
            raise SystemExit(f"error: --capture-video needs MoviePy: pip install 'cleanrl_pave[video]' ({error})")
    return env
