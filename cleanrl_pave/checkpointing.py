"""Atomic files, exact checkpoints, stops on SIGINT/SIGTERM, checkpoint lookup and validation, and rebuilding a
saved agent.

Not part of any algorithm: every script uses these so that an interrupted run loses nothing and continues exactly
as it would have run (README: Reproducibility), and a saved model of any script can be reloaded by the analysis tools.
A checkpoint is one mapping of named stateful parts (networks, optimizers, the replay buffer, the random streams, the
training env, ...), each saved by its `state_dict()` and restored by its `load_state_dict()`.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import json
import os
import pickle
import random
import re
import shlex
import signal
import sys
import threading
import time
from typing import Optional

import gymnasium as gym
import numpy as np
import torch

CHECKPOINT_FILE = "checkpoint.pt"


def atomic_write(path: str, write) -> None:
    """Write through `write(file)` into `.NAME.partial` beside `path`, then rename it over `path`. A write killed
    midway leaves the old file intact, and its partial file is overwritten by the next write, never piled up."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp_path = os.path.join(directory, f".{name}.partial")
    try:
        with open(tmp_path, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def atomic_torch_save(obj, path: str) -> None:
    """torch.save that leaves either the old file or the complete new one, never a partial file."""
    atomic_write(path, lambda file: torch.save(obj, file))


def atomic_write_json(path: str, obj) -> None:
    """json.dump with the same all-or-nothing guarantee as `atomic_torch_save`."""
    atomic_write(path, lambda file: file.write(json.dumps(obj, indent=2).encode()))


def jsonable(config: dict) -> dict:
    """A dataclass dict with tuples turned into lists, ready for JSON, W&B and `Args(**config)`."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in config.items()}


class RandomStreams:
    """Every random state a script draws from: Python, NumPy and torch global, and the script's own NumPy and torch
    generators, as tensors and plain types only, so that checkpoints load with `torch.load(weights_only=True)`."""

    def __init__(self, numpy_rng: np.random.Generator, torch_generator: torch.Generator):
        self.numpy_rng, self.torch_generator = numpy_rng, torch_generator

    def state_dict(self) -> dict:
        name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": (name, keys.tolist(), position, has_gauss, cached_gaussian),
            "torch": torch.get_rng_state(),
            "numpy_rng": self.numpy_rng.bit_generator.state,
            "torch_generator": self.torch_generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        random.setstate(state["python"])
        name, keys, position, has_gauss, cached_gaussian = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
        torch.set_rng_state(state["torch"])
        self.numpy_rng.bit_generator.state = state["numpy_rng"]
        self.torch_generator.set_state(state["torch_generator"])


def generator_state(generator: Optional[np.random.Generator]) -> Optional[dict]:
    return None if generator is None else generator.bit_generator.state


def generator_from_state(state: Optional[dict]) -> Optional[np.random.Generator]:
    if state is None:
        return None
    generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
    generator.bit_generator.state = state
    return generator


class ResumableEnv(gym.Wrapper):
    """The training env, resumable at any step: it remembers how its current episode began (the reset's seed, or the
    env's random state just before the reset) and the actions taken since. `load_state_dict` redoes that reset and
    replays those actions, which rebuilds the whole env exactly (physics, wrappers' counters, the env's random
    state) for any env whose steps are deterministic given its own random generator, as gymnasium's are; it checks
    that the replay ends on the saved observation and warns in one line where it does not."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.reset_seed, self.reset_rng, self.episode_actions = None, None, []
        self.observation = self.previous_observation = None

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        self.reset_seed, self.reset_rng = seed, generator_state(self.env.unwrapped._np_random)
        self.episode_actions = []
        obs, info = self.env.reset(seed=seed, options=options)
        self.observation = self.previous_observation = obs
        return obs, info

    def step(self, action):
        self.episode_actions.append(np.array(action, copy=True))
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.previous_observation, self.observation = self.observation, obs
        return obs, reward, terminated, truncated, info

    def state_dict(self) -> dict:
        spaces = {"action_space": self.action_space, "observation_space": self.observation_space}
        return {
            "reset_seed": self.reset_seed,
            "reset_rng": self.reset_rng,
            "episode_actions": [torch.from_numpy(np.asarray(action)) for action in self.episode_actions],
            "observation": torch.from_numpy(np.asarray(self.observation)),
            "spaces_rng": {name: generator_state(space._np_random) for name, space in spaces.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state["reset_rng"] is not None:
            self.env.unwrapped.np_random = generator_from_state(state["reset_rng"])
        self.reset(seed=state["reset_seed"])
        for action in state["episode_actions"]:
            self.step(action.numpy())
        for name, space_state in state["spaces_rng"].items():
            getattr(self, name)._np_random = generator_from_state(space_state)
        if not np.array_equal(np.asarray(self.observation), state["observation"].numpy()):
            print(f"warning: replaying the training env's episode ({len(state['episode_actions'])} steps) did not "
                  f"reach the saved observation: this env is not deterministic, so the resumed run is not exact",
                  file=sys.stderr, flush=True)


def checkpoint_state(parts: dict) -> dict:
    """{name: part.state_dict()} of a script's named stateful parts."""
    return {name: part.state_dict() for name, part in parts.items()}


def restore_state(parts: dict, checkpoint: dict, path: str) -> None:
    """Load each named part from its entry of `checkpoint`, removing the entry (so that a large replay buffer is not
    held twice once loaded); a checkpoint without an entry for some part stops with one line."""
    missing = [name for name in parts if name not in checkpoint]
    if missing:
        raise SystemExit(f"error: {path} has no saved {', '.join(missing)} (written by an older version of this "
                         "script?); it cannot be resumed exactly: start the run afresh")
    for name, part in parts.items():
        part.load_state_dict(checkpoint.pop(name))


class CheckpointSchedule:
    """When a run saves a checkpoint: every `every_steps` env steps and every `every_minutes` of wall time (0: never),
    always before the last step (the run's results are written there instead)."""

    def __init__(self, every_steps: int, every_minutes: float, total_steps: int):
        self.every_steps, self.every_s, self.total_steps = every_steps, 60.0 * every_minutes, total_steps
        self.last_time = time.monotonic()

    def due(self, global_step: int) -> bool:
        if global_step >= self.total_steps:
            return False
        if (self.every_steps and global_step % self.every_steps == 0) or \
                (self.every_s and time.monotonic() - self.last_time >= self.every_s):
            self.last_time = time.monotonic()
            return True
        return False


class StopSignals:
    """SIGINT and SIGTERM (Ctrl-C, SLURM, Ray, the benchmark runner) ask the run to stop: the training loop then saves
    a checkpoint at the end of the current step and exits with 128 + the signal's number (130 or 143).
    A second signal stops the process at once, with one line and no checkpoint (the previous one stays)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, checkpoint_path: str):
        self.checkpoint_path, self.received = checkpoint_path, None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
            self.previous = {signum: signal.signal(signum, self.handle) for signum in self.SIGNALS}

    def handle(self, signum, frame) -> None:
        if self.received is not None:
            print(f"{signal.Signals(signum).name} again: stopped at once, without a new checkpoint "
                  f"({self.checkpoint_path} holds the last one, if any)", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.received = signum

    def stop(self, global_step: int, resume_command: str) -> int:
        """Say in one line where the run stopped and how to resume it; returns the exit code, 128 + the signal."""
        print(f"{signal.Signals(self.received).name}: stopped at step {global_step}; checkpoint saved to "
              f"{self.checkpoint_path}; resume with: {resume_command}", file=sys.stderr, flush=True)
        return 128 + self.received

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def resume_command(script_file: str, run_name: str, env_id: str, seed: int) -> str:
    """The command that continues this run: this invocation's own command line when the script was run as a file,
    with `--run-name NAME --resume`."""
    if os.path.basename(sys.argv[0]) == os.path.basename(script_file):
        argv, kept = sys.argv[1:], []
        skip = False
        for arg in argv:
            if skip:
                skip = False
            elif arg == "--run-name":
                skip = True
            elif arg != "--resume" and not arg.startswith("--run-name="):
                kept.append(arg)
        command = ["python", sys.argv[0], *kept]
    else:
        command = ["python", script_file, "--env-id", env_id, "--seed", str(seed)]
    return shlex.join([*command, "--run-name", run_name, "--resume"])


def find_resumable_run(env_id: str, exp_name: str, seed: int, runs_dir: str = "runs") -> str | None:
    """Name of the most recent run of (env, experiment, seed) under `runs_dir` that holds a checkpoint."""
    pattern = os.path.join(glob.escape(runs_dir), glob.escape(f"{env_id}__{exp_name}__{seed}__") + "*", CHECKPOINT_FILE)
    candidates = sorted(glob.glob(pattern), key=os.path.getmtime)
    return os.path.basename(os.path.dirname(candidates[-1])) if candidates else None


def load_file(path: str, map_location="cpu"):
    """`torch.load(path, weights_only=True)`: tensors and plain types only, so that opening someone else's file
    cannot run code. Any failure stops with one line naming the file and what is wrong with it."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: no such file: {path}")
    if os.path.getsize(path) == 0:
        raise SystemExit(f"error: {path} is empty (0 bytes)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if found:
            raise SystemExit(f"error: {path} holds objects other than tensors and plain types ({found[1]}); "
                             "not loaded, since unpickling them could run code") from None
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
        raise SystemExit(f"error: {path} is not a PyTorch file, or is corrupt "
                         f"({reason[1] if reason else first_line(error)})") from None
    except Exception as error:  # torch.load raises many types for damaged files: EOFError, RuntimeError, OSError...
        with open(path, "rb") as file:
            is_zip = file.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
        what = "is truncated or corrupt" if is_zip else "is not a PyTorch file, or is corrupt"
        raise SystemExit(f"error: {path} {what} ({type(error).__name__}: {first_line(error)})") from None


def first_line(error: BaseException) -> str:
    """The first sentence of an error message, for one-line errors."""
    lines = str(error).strip().splitlines()
    return re.split(r"(?<=\.)\s", lines[0])[0][:200] if lines else "no message"


def load_checkpoint(path: str, script: str, env_id: str, map_location="cpu") -> dict:
    """Load a checkpoint for `script` on `env_id`, refusing one written by another script or for another env."""
    payload = load_file(path, map_location)
    if not isinstance(payload, dict) or "script" not in payload:
        raise SystemExit(f"error: {path} is not a cleanrl_pave checkpoint")
    if payload["script"] != script:
        raise SystemExit(f"error: {path} was written by {payload['script']}.py, not {script}.py; refusing to resume")
    if payload["env_id"] != env_id:
        raise SystemExit(f"error: {path} is a checkpoint for {payload['env_id']}, not {env_id}; refusing to resume")
    return payload


def load_agent(path: str, map_location="cpu"):
    """Rebuild the actor and twin critic saved in a checkpoint.pt or a .cleanrl_model file of any script.

    Returns (script module, its Args, actor, qf, the raw payload); the networks are in eval mode on CPU.
    """
    if not os.path.isfile(path):
        raise SystemExit(f"error: no such model file: {path}")
    payload = load_file(path, map_location)
    if not isinstance(payload, dict) or not {"script", "args", "obs_dim", "act_dim", "actor", "qf"} <= payload.keys() \
            or not isinstance(payload["script"], str) or not isinstance(payload["args"], dict):
        raise SystemExit(f"error: {path} is not a cleanrl_pave model or checkpoint")
    try:
        module = importlib.import_module(f"cleanrl_pave.{payload['script']}")
    except ImportError:
        module = None
    if not hasattr(module, "make_agent"):
        raise SystemExit(f"error: {path} names script {payload['script']!r}, which is not a cleanrl_pave script")
    known_fields = {field.name for field in dataclasses.fields(module.Args)}
    args = module.Args(**{key: value for key, value in payload["args"].items() if key in known_fields})
    actor, qf = module.make_agent(args, payload["obs_dim"], payload["act_dim"])
    try:
        actor.load_state_dict(payload["actor"])
        qf.load_state_dict(payload["qf"])
    except RuntimeError as error:
        raise SystemExit(f"error: {path}: its networks do not fit {payload['script']}.py ({first_line(error)})") \
            from None
    return module, args, actor.eval(), qf.eval(), payload
