"""Suite loader: reads a suite file, checks it, and expands it into (env x script x cell x seed) runs with their flags.

A suite file (``benchmark/suites/<name>.json``) holds::

    {
      "description": "what the suite reproduces",
      "wandb_tags": ["td3", "main"],          # added to --wandb-tags when the runner gets --track
      "checkpoint_fraction": 0.1,             # optional: --checkpoint-freq = this fraction of the steps
      "seeds": [178132, 410580],
      "env_flags": {"Pendulum-v1": {"total-timesteps": 100000}},   # flags for every run on that env
      "flags": {"eval-episodes": 10},         # flags for every run
      "grids": [                              # optional; without it the suite itself is the one grid
        {"envs": [...], "scripts": [...], "seeds": [...], "flags": {...},
         "cells": [{"tag": "mpr0", "flags": {"lam-mpr": 0}}, {}]}
      ]
    }

A grid's ``envs``, ``scripts``, ``seeds`` and ``cells`` default to the suite's. ``cells`` (default: one
cell with no flags) are variants of the same scripts; a cell with flags gets a tag (given, or derived from
its flags) that goes into the run name. ``note`` keys are allowed anywhere for comments. Flags are tyro
flag names without the leading dashes; a value is a scalar, a list (``"hidden-sizes": [32, 32]``) or a bool
(``true`` -> ``--x``, ``false`` -> ``--no-x``). Later sources win: suite ``flags`` < ``env_flags`` < grid
``flags`` < cell ``flags`` < ``--set`` on the command line.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

BENCHMARK_DIR = Path(__file__).resolve().parent
SUITES_DIR = BENCHMARK_DIR / "suites"
SCRIPTS_DIR = BENCHMARK_DIR.parent / "cleanrl_pave"

# Flags the runner sets itself; a suite or --set that names one would silently fight the runner.
RUNNER_FLAGS = frozenset({"env-id", "seed", "run-name", "resume", "threads", "track", "wandb-project-name",
                          "wandb-entity", "wandb-group", "wandb-tags"})

FlagValue = Union[str, int, float, bool, list]

SUITE_KEYS = {"description", "note", "wandb_tags", "checkpoint_fraction", "seeds", "envs", "scripts", "flags",
              "env_flags", "cells", "grids"}
GRID_KEYS = {"note", "envs", "scripts", "seeds", "flags", "cells"}
CELL_KEYS = {"note", "tag", "flags"}
TAG_PATTERN = re.compile(r"^[A-Za-z0-9.+-]+(_[A-Za-z0-9.+-]+)*$")  # no "__": that separates run-name parts


class SuiteError(ValueError):
    """Bad suite or bad selection; the message is one line meant for the user."""


@dataclass(frozen=True)
class Run:
    """One training run: a script on an env with a seed and the flags of its cell."""

    name: str
    env_id: str
    script: str
    seed: int
    tag: str
    flags: dict = field(hash=False)

    @property
    def total_timesteps(self) -> int | None:
        value = self.flags.get("total-timesteps")
        try:
            return None if value is None else int(float(value))
        except ValueError:
            raise SuiteError(f"run {self.name}: total-timesteps {value!r} is not a number") from None

    def matches(self, key: str, patterns: list[str]) -> bool:
        """Whether this run's ``key`` (env, script, seed, tag, name) matches one of the glob patterns."""
        value = {"env": self.env_id, "script": self.script, "seed": str(self.seed), "tag": self.tag,
                 "name": self.name}[key]
        return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


@dataclass
class Suite:
    name: str
    description: str
    wandb_tags: list[str]
    checkpoint_fraction: float
    runs: list[Run]


def flag_name(key: str) -> str:
    """'--lam_mpr' and 'lam-mpr' both name the tyro flag 'lam-mpr'."""
    return key.lstrip("-").replace("_", "-")


def flag_argv(name: str, value: FlagValue) -> list[str]:
    """Command-line tokens of one flag, in tyro's conventions."""
    if isinstance(value, bool):
        return [f"--{name}"] if value else [f"--no-{name}"]
    if isinstance(value, list):
        return [f"--{name}", *map(str, value)]
    return [f"--{name}", str(value)]


def run_name(env_id: str, script: str, seed: int, tag: str = "") -> str:
    """Deterministic run name, so a re-run finds its results and checkpoints: env__script[__tag]__seed."""
    return "__".join([env_id, script, *([tag] if tag else []), str(seed)])


def derived_tag(flags: dict) -> str:
    """A readable tag from a cell's flags, e.g. {'lam-mpr': 0, 'lam-curv': 0.1} -> 'lam-mpr0_lam-curv0.1'."""
    parts = []
    for name, value in flags.items():
        text = "x".join(map(str, value)) if isinstance(value, list) else str(value).lower()
        parts.append(name + re.sub(r"[^A-Za-z0-9.+-]", "", text))
    return "_".join(parts)


def parse_overrides(assignments: list[str]) -> dict:
    """--set KEY=VALUE items -> flags; 'true'/'false' are bools and a value with spaces is a list."""
    overrides = {}
    for assignment in assignments:
        key, separator, text = assignment.partition("=")
        if not separator or not key.strip("-"):
            raise SuiteError(f"--set expects KEY=VALUE, got {assignment!r}")
        tokens = text.split()
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        else:
            value = tokens if len(tokens) > 1 else text
        overrides[checked_flag_name(key, "--set")] = value
    return overrides


def checked_flag_name(key: str, where: str) -> str:
    name = flag_name(key)
    if name in RUNNER_FLAGS:
        raise SuiteError(f"{where}: flag '{name}' is set by the runner (see run.py --help)")
    return name


def suite_path(name_or_path: str) -> Path:
    """A suite is a file path, or the name of a file in benchmark/suites/."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise SuiteError(f"no suite file {name_or_path}")
        return path
    path = SUITES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.json")))
        raise SuiteError(f"unknown suite '{name_or_path}' (known: {known})")
    return path


def load_suite(name_or_path: str, overrides: dict | None = None, scripts_dir: Path = SCRIPTS_DIR) -> Suite:
    """Read a suite file and expand it into runs (in file order: grid, env, script, cell, seed)."""
    path = suite_path(name_or_path)
    try:
        spec = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise SuiteError(f"{path}: not a text file (a suite is a JSON file, see benchmark/README.md)") from None
    except json.JSONDecodeError as error:
        raise SuiteError(f"{path}: invalid JSON ({error})") from None
    name = path.stem
    check_keys(spec, SUITE_KEYS, f"suite {name}")
    suite_flags = checked_flags(spec.get("flags", {}), f"suite {name}")
    env_flags = {env: checked_flags(flags, f"suite {name} env_flags[{env}]")
                 for env, flags in spec.get("env_flags", {}).items()}
    overrides = overrides or {}

    runs: list[Run] = []
    for index, grid in enumerate(spec.get("grids", [spec])):
        where = f"suite {name} grid {index}"
        if grid is not spec:
            check_keys(grid, GRID_KEYS, where)
        envs, scripts, seeds = (grid.get(key, spec.get(key)) for key in ("envs", "scripts", "seeds"))
        for key, values in (("envs", envs), ("scripts", scripts), ("seeds", seeds)):
            if not values or not isinstance(values, list):
                raise SuiteError(f"{where}: '{key}' must be a non-empty list")
        if not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in seeds):
            raise SuiteError(f"{where}: seeds must be integers, got {seeds}")
        for script in scripts:
            check_script(script, scripts_dir, where)
        grid_flags = checked_flags(grid.get("flags", {}), where) if grid is not spec else {}
        for env_id in envs:
            for script in scripts:
                for cell in grid.get("cells", spec.get("cells", [{}])):
                    check_keys(cell, CELL_KEYS, f"{where} cell")
                    cell_flags = checked_flags(cell.get("flags", {}), f"{where} cell")
                    tag = cell.get("tag", derived_tag(cell_flags))
                    if tag and not TAG_PATTERN.match(tag):
                        raise SuiteError(f"{where}: tag {tag!r} must be letters, digits, '.+-' and single '_'")
                    flags = {**suite_flags, **env_flags.get(env_id, {}), **grid_flags, **cell_flags, **overrides}
                    for seed in seeds:
                        runs.append(Run(run_name(env_id, script, seed, tag), env_id, script, seed, tag, flags))

    seen = set()
    for run in runs:
        if run.name in seen:
            raise SuiteError(f"suite {name}: run {run.name} appears twice (give the cells distinct tags)")
        seen.add(run.name)
    return Suite(name, spec.get("description", ""), list(spec.get("wandb_tags", [])),
                 float(spec.get("checkpoint_fraction", 0.1)), runs)


def check_keys(mapping, allowed: set, where: str) -> None:
    if not isinstance(mapping, dict):
        raise SuiteError(f"{where}: expected a JSON object")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def checked_flags(flags, where: str) -> dict:
    if not isinstance(flags, dict):
        raise SuiteError(f"{where}: 'flags' must be a JSON object")
    return {checked_flag_name(key, where): value for key, value in flags.items()}


def script_flags(script_path: Path) -> set[str]:
    """The flag names of a script, read from its `Args` dataclass without importing it (so without torch)."""
    tree = ast.parse(script_path.read_text())
    args = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Args")
    return {flag_name(node.target.id) for node in args.body if isinstance(node, ast.AnnAssign)}


def check_flags(runs: list[Run], scripts_dir: Path) -> None:
    """Every flag of every run (suite, cell and --set flags) is a flag of its script: a typo fails now, in one
    line, not when the run starts."""
    known = {}
    for run in runs:
        if run.script not in known:
            known[run.script] = script_flags(scripts_dir / f"{run.script}.py")
        for name in run.flags:
            if name not in known[run.script]:
                close = difflib.get_close_matches(name, sorted(known[run.script]), n=1)
                hint = f" (did you mean --{close[0]}?)" if close else ""
                raise SuiteError(f"run {run.name}: --{name} is not a flag of {run.script}.py{hint}")


def check_script(script: str, scripts_dir: Path, where: str) -> None:
    """A suite names scripts that exist: `<scripts_dir>/<script>.py`, with the closest name as a hint."""
    if not (scripts_dir / f"{script}.py").is_file():
        close = difflib.get_close_matches(script, sorted(path.stem for path in scripts_dir.glob("*.py")), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise SuiteError(f"{where}: unknown script '{script}' (no {scripts_dir / script}.py{hint})")


def select(runs: list[Run], filters: list[str]) -> list[Run]:
    """Keep the runs matching every KEY=PATTERN[,PATTERN...] filter (glob patterns, keys env/script/seed/tag/name)."""
    for item in filters:
        key, separator, patterns = item.partition("=")
        if not separator or key not in ("env", "script", "seed", "tag", "name"):
            raise SuiteError(f"--filter expects env|script|seed|tag|name=PATTERN[,PATTERN], got {item!r}")
        runs = [run for run in runs if run.matches(key, patterns.split(","))]
    return runs
