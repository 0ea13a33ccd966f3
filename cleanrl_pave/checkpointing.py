"""Atomic files, checkpoint lookup and validation, RNG capture, and rebuilding a saved agent.

Not part of any algorithm: every script uses these so that an interrupted run loses nothing and a saved
model of any script can be reloaded by the analysis tools.
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
import tempfile

import numpy as np
import torch

CHECKPOINT_FILE = "checkpoint.pt"


def atomic_write(path: str, write) -> None:
    """Write through `write(file)` into a temporary file beside `path`, then rename it over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp_path, 0o644)  # mkstemp makes owner-only files; results are meant to be shared
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


def rng_state(numpy_rng: np.random.Generator, torch_generator: torch.Generator) -> dict:
    """Every random state a script draws from: Python, NumPy, torch global, and the script's own generators, as
    tensors and plain types only, so that checkpoints load with `torch.load(weights_only=True)`."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), position, has_gauss, cached_gaussian),
        "torch": torch.get_rng_state(),
        "numpy_rng": numpy_rng.bit_generator.state,
        "torch_generator": torch_generator.get_state(),
    }


def restore_rng_state(state: dict, numpy_rng: np.random.Generator, torch_generator: torch.Generator) -> None:
    """Inverse of `rng_state`."""
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    numpy_rng.bit_generator.state = state["numpy_rng"]
    torch_generator.set_state(state["torch_generator"])


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
