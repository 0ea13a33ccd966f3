"""One loader for every result source, producing ONE tidy pandas table.

Sources (mix them freely in one call):

- local run directories ``runs/<run_name>/``: ``results.json`` (final evaluation and eval curve) of finished
  runs, with ``geometry_during_training.json`` beside it when present (the ``geometry/*`` curves a run logged with
  ``--geometry-freq``, as exported by ``benchmark/reproduction/queue.py``), TensorBoard event files of runs without
  one (still running, crashed);
- geometry JSONs written by ``python -m cleanrl_pave.critic_geometry`` (keys M_sup, M_mean, ndef_rate,
  trace_rate, cos_mean, flip_rate, script, env_id, seed), anywhere under a given directory;
- W&B CSV exports from the web UI: the runs-table export (one row per run: ``Name``, ``State``, ...,
  config columns such as ``env_id``/``exp_name``/``seed``, summary columns such as
  ``eval/episodic_return``) and the chart (history) export (a ``global_step``/``Step``/``_step``
  column plus ``<run name> - <metric>`` columns, with ``__MIN``/``__MAX`` companions);
- the W&B API (``wandb.Api().runs(path)``), when online.

The tidy table has one measurement per row, columns ``TIDY_COLUMNS``:

====================  =====================================================================
env                   env id, e.g. ``Hopper-v5``
backbone              ``td3`` or ``sac``
method                ``base``, ``pave``, ``caps_pave``, ... (from the script name), with ``[tag]`` for a
                      benchmark cell tag in the run name: ``pave[mpr+vfc]``
seed                  training seed (int)
metric                ``re``/``sm`` (final evaluation, mean over its episodes),
                      ``re_episode``/``sm_episode`` (one row per final-evaluation episode),
                      ``eval/episodic_return``, ``eval/smoothness``, ``eval/action_change``,
                      ``geometry/...`` (curves over steps), ``M_sup``, ``ndef_rate``, ... (critic geometry JSONs)
value                 float
step                  global step of the measurement (nullable Int64)
episode               episode index within the final evaluation (nullable Int64)
run_name              run name (the ``runs/`` directory name, the W&B run name)
source                the input (path or ``wandb:<entity/project>``) the row came from
code                  the code that trained the run, from its results.json segments: the commit's first 12
                      hex digits (``+dirty`` with uncommitted changes; ``cleanrl_pave <version>`` outside a
                      checkout), several joined by ``,`` for a run resumed under other code; empty if unknown
machine               the CPU model (the GPU's name on a GPU) of each segment, joined alike; empty if unknown
====================  =====================================================================
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from cleanrl_pave import methods

TIDY_COLUMNS = ["env", "backbone", "method", "seed", "metric", "value", "step", "episode", "run_name", "source", "code",
                "machine"]

RETURN, SMOOTHNESS = "re", "sm"
RETURN_EPISODE, SMOOTHNESS_EPISODE = "re_episode", "sm_episode"
CURVE_RETURN, CURVE_SMOOTHNESS = "eval/episodic_return", "eval/smoothness"
GEOMETRY_METRICS = ("M_sup", "M_mean", "ndef_rate", "trace_rate", "cos_mean", "flip_rate")
# Scalars kept from TensorBoard logs and W&B histories; training losses are left out because no table or
# figure uses them and a 1e6-step run logs them thousands of times.
CURVE_TAG_PREFIXES = ("eval/", "geometry/")
# results.json eval_history key of each eval/* scalar the scripts log at the same steps
HISTORY_KEYS = {CURVE_RETURN: "return_mean", CURVE_SMOOTHNESS: "smoothness_mean", "eval/action_change": "action_change_mean"}
# A W&B run summary holds the last value logged for each scalar, and the final evaluation is logged last.
SUMMARY_TO_METRIC = {CURVE_RETURN: RETURN, CURVE_SMOOTHNESS: SMOOTHNESS}
# x-axis column of a W&B chart export: global_step, the env step the scripts log and declare as every chart's step
# metric; an export over W&B's own Step/_step (its count of log calls) is refused.
WANDB_STEP_COLUMNS = ("global_step", "Step", "_step")
WANDB_RUN_TABLE_REQUIRED = ("Name", "env_id", "exp_name", "seed")

DURING_TRAINING_FILE = "geometry_during_training.json"  # beside a results.json: its run's geometry/* curves
_TB_EVENT_PREFIX = "events.out.tfevents"


class PlotInputError(ValueError):
    """Bad input (missing path, nothing to load, unreadable export); the message is one line for the CLI."""


def parse_script(name: str) -> tuple[str, str]:
    """Backbone and method of a script name: ``td3_pave_continuous`` -> ("td3", "pave"),
    ``td3_continuous`` -> ("td3", "base"), ``sac_caps_pave_continuous`` -> ("sac", "caps_pave")."""
    parsed = methods.parse_script(name)
    if parsed is None:
        raise PlotInputError(f"cannot tell backbone/method from {name!r} "
                             f"(expected <{'|'.join(methods.BACKBONES)}>[_<method>]_continuous)")
    return parsed


def method_name(script: str, tag: str = "") -> str:
    """The tidy table's method: the script's method, plus ``[tag]`` for a benchmark cell with flags
    (``pave[mpr+vfc]``), so runs of one script with different settings are never pooled."""
    method = parse_script(script)[1]
    return f"{method}[{tag}]" if tag else method


def parse_run_name(run_name: str) -> dict | None:
    """env, exp_name (script), seed and tag of a run name, else None. Understood forms:
    ``{env}__{script}__{seed}`` and ``{env}__{script}__{tag}__{seed}`` (benchmark runner), and
    ``{env}__{exp_name}__{seed}__{time}`` (CleanRL's default)."""
    parts = run_name.split("__")
    is_int = [bool(re.fullmatch(r"-?\d+", part)) for part in parts]
    if len(parts) in (3, 4) and is_int[2]:
        return {"env": parts[0], "exp_name": parts[1], "seed": int(parts[2]), "tag": ""}
    if len(parts) == 4 and is_int[3]:
        return {"env": parts[0], "exp_name": parts[1], "seed": int(parts[3]), "tag": parts[2]}
    return None


def load_runs(paths: str | os.PathLike | Iterable[str | os.PathLike], wandb_projects: Iterable[str] = ()) -> pd.DataFrame:
    """Load every run found in ``paths`` (directories, ``results.json``/geometry JSON files, W&B ``.csv``
    exports) and in the W&B projects ``wandb_projects`` ("entity/project") into one tidy table.

    When two inputs hold the same metric of the same run (a local run also exported from W&B), the
    earlier input wins, so list local logs first.
    """
    paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(path) for path in paths]
    records: list[dict] = []
    csv_paths, sources = [], []
    for path in paths:
        if not path.exists():
            raise PlotInputError(f"no such file or directory: {path}")
        if path.suffix.lower() == ".csv":
            csv_paths.append(path)
            sources.append(str(path))
            continue
        local = _load_local(path)
        exports = sorted(path.glob("*.csv")) if path.is_dir() else []
        if not local and exports:  # a folder of W&B exports
            csv_paths += exports
            sources += map(str, exports)
        else:
            sources.append(str(path))
        records += local
    records += _load_wandb_csvs(csv_paths)
    for project in wandb_projects:
        records += _wandb_api_records(project)
    if not records:
        searched = ", ".join(map(str, paths)) or "(no inputs)"
        raise PlotInputError(
            f"no runs found in {searched} (looked for results.json, TensorBoard event files, geometry JSONs, W&B CSV exports)"
        )
    sources += [f"wandb:{project}" for project in wandb_projects]
    return _keep_first_source(_tidy(records), sources)


def load_wandb_api(project: str, filters: dict | None = None) -> pd.DataFrame:
    """Tidy table of the finished runs of a W&B project ("entity/project"); needs ``wandb`` and network."""
    records = _wandb_api_records(project, filters)
    if not records:
        raise PlotInputError(f"no finished runs with env_id/exp_name/seed in W&B project {project}")
    return _tidy(records)


def one_run_per_seed(df: pd.DataFrame) -> pd.DataFrame:
    """Keep, per (env, backbone, method, seed, metric), the rows of one run: the one whose name sorts last,
    i.e. the newest for CleanRL names (they end in the start time). Warns about the runs left out."""
    keys = ["env", "backbone", "method", "seed", "metric"]
    runs = df[keys + ["run_name"]].drop_duplicates()
    chosen = runs.sort_values("run_name").drop_duplicates(keys, keep="last")
    if len(chosen) < len(runs):
        left_out = sorted(set(runs.drop(chosen.index)["run_name"]))
        warnings.warn(f"several runs share a seed; using the newest, leaving out {len(left_out)}: {', '.join(left_out[:3])}")
    return df.merge(chosen, on=keys + ["run_name"])


# ----------------------------------------------------------------------------------------------- local logs


def _load_local(path: Path) -> list[dict]:
    """Records of a runs/ tree, a single run directory, or a single JSON file."""
    source = str(path)
    if path.is_file():
        if path.name == "results.json":
            return _load_run_dir(path.parent, source)
        return _load_geometry_json(path, source) if path.suffix == ".json" else []
    records = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()  # deterministic order
        here = Path(dirpath)
        if "results.json" in filenames or any(name.startswith(_TB_EVENT_PREFIX) for name in filenames):
            records += _load_run_dir(here, source)
        for name in sorted(filenames):
            if name.endswith(".json") and name not in ("results.json", DURING_TRAINING_FILE):
                records += _load_geometry_json(here / name, source)
    return records


def _load_run_dir(run_dir: Path, source: str) -> list[dict]:
    """Final evaluation and eval curves of one run directory.

    A finished run's results.json holds the final evaluation and, in eval_history, the same eval curve
    as its eval/* scalars, so its event files are not read: parsing them costs about 6 s for a 1e6-step
    run (every loss scalar must be decoded), minutes for a benchmark. Runs without results.json (still
    running, crashed) are read from their TensorBoard event files.
    """
    results_path = run_dir / "results.json"
    results = _read_json(results_path) if results_path.is_file() else None
    try:
        if results is None:
            parsed = parse_run_name(run_dir.name)
            if parsed is None:
                warnings.warn(f"skipping {run_dir}: no results.json, and the directory name is not a run name (<env>__<script>__<seed>)")
                return []
            meta = _meta(parsed["env"], parsed["exp_name"], None, parsed["seed"], run_dir.name, source)
            records = []
            curves = _read_tensorboard(run_dir)
        else:
            run_name = results.get("run_name") or run_dir.name
            meta = _meta(results["env_id"], results.get("exp_name"), results.get("script"), results["seed"], run_name, source)
            meta.update(_provenance(results.get("segments") or []))
            evaluation, step = results["eval"], results.get("global_step")
            records = [
                _record(meta, RETURN, evaluation["return_mean"], step),
                _record(meta, SMOOTHNESS, evaluation["smoothness_mean"], step),
            ]
            for metric, key in ((RETURN_EPISODE, "episode_returns"), (SMOOTHNESS_EPISODE, "episode_smoothness")):
                records += [_record(meta, metric, value, step, episode) for episode, value in enumerate(evaluation[key])]
            history = results["eval_history"]
            curves = {
                tag: [(point["step"], point[key]) for point in history if key in point]
                for tag, key in HISTORY_KEYS.items()
            }
            during_training = run_dir / DURING_TRAINING_FILE
            if during_training.is_file():
                for key, points in _read_json(during_training).items():
                    curves[f"geometry/{key}"] = [(int(step), value) for step, value in points.items()]
    except KeyError as missing:
        raise PlotInputError(f"{results_path}: missing key {missing}") from None
    for tag, points in curves.items():
        records += [_record(meta, tag, value, step) for step, value in points]
    return records


def _read_tensorboard(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} for the kept scalar tags of the event files directly in run_dir."""
    if not any(path.name.startswith(_TB_EVENT_PREFIX) for path in run_dir.iterdir()):
        return {}
    # Imported here: it takes about a second and is only needed when event files exist.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0 keeps every point (default samples)
    accumulator.Reload()
    curves = {}
    for tag in accumulator.Tags()["scalars"]:
        if tag.startswith(CURVE_TAG_PREFIXES):
            by_step = {event.step: event.value for event in accumulator.Scalars(tag)}  # a resumed run re-logs steps: last wins
            curves[tag] = sorted(by_step.items())
    return curves


def _load_geometry_json(path: Path, source: str) -> list[dict]:
    """Records of a critic-geometry JSON; other JSON files yield nothing."""
    data = _read_json(path)
    if not isinstance(data, dict) or not any(key in data for key in GEOMETRY_METRICS):
        return []
    try:
        meta = _meta(data["env_id"], data.get("exp_name"), data["script"], data["seed"], data.get("run_name") or path.stem, source)
    except KeyError as missing:
        raise PlotInputError(f"{path}: geometry JSON lacks key {missing}") from None
    step = data.get("global_step")
    return [_record(meta, key, data[key], step) for key in GEOMETRY_METRICS if data.get(key) is not None]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise PlotInputError(f"cannot read {path}: {error}") from None


# ------------------------------------------------------------------------------------------------- W&B


def _load_wandb_csvs(paths: list[Path]) -> list[dict]:
    """Records of W&B runs-table and chart exports. Runs-table rows give the final metrics and the
    env/method/seed of each run name, which chart columns then use (else the run name is parsed)."""
    run_tables, histories = [], []
    for path in paths:
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")  # tolerate a BOM
        except (OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
            raise PlotInputError(f"cannot read {path}: {error}") from None
        if list(frame.columns) == ["Wall time", "Step", "Value"]:
            raise PlotInputError(
                f"{path} is a TensorBoard scalar export (one scalar of one run, with no run name): pass the run's "
                "directory, which holds its event files or results.json, with --runs instead"
            )
        if "Name" in frame.columns:
            run_tables.append((path, frame))
        elif any(column in frame.columns for column in WANDB_STEP_COLUMNS):
            histories.append((path, frame))
        else:
            raise PlotInputError(
                f"{path} is not a W&B export: expected a 'Name' column (runs table) or a "
                f"{'/'.join(WANDB_STEP_COLUMNS)} column (chart export)"
            )
    known_runs: dict[str, dict] = {}
    records = []
    for path, frame in run_tables:
        records += _from_wandb_run_table(path, frame, known_runs)
    for path, frame in histories:
        records += _from_wandb_history(path, frame, known_runs)
    return records


def _from_wandb_run_table(path: Path, frame: pd.DataFrame, known_runs: dict[str, dict]) -> list[dict]:
    missing = [column for column in WANDB_RUN_TABLE_REQUIRED if column not in frame.columns]
    if missing:
        raise PlotInputError(f"{path}: W&B runs export lacks column(s) {', '.join(missing)} (show them in the runs table before exporting)")
    records = []
    unfinished = 0
    for row in frame.to_dict("records"):
        meta = _meta(row["env_id"], row["exp_name"], row.get("script"), row["seed"], row["Name"], str(path))
        known_runs[row["Name"]] = meta
        if row.get("State", "finished") != "finished":  # a crashed or running run's summary is not a final evaluation
            unfinished += 1
            continue
        step = _number(row.get("global_step", ""))
        for column, metric in SUMMARY_TO_METRIC.items():
            value = _number(row.get(column, ""))
            if value is not None:
                records.append(_record(meta, metric, value, None if step is None else int(step)))
    if unfinished:
        warnings.warn(f"{path}: {unfinished} run(s) not in State 'finished'; their summaries are left out")
    if not any(column in frame.columns for column in SUMMARY_TO_METRIC):
        raise PlotInputError(
            f"{path}: the W&B runs export has no {' or '.join(SUMMARY_TO_METRIC)} column: show those summary "
            "columns in the runs table before exporting"
        )
    return records


def _from_wandb_history(path: Path, frame: pd.DataFrame, known_runs: dict[str, dict]) -> list[dict]:
    step_column = next(column for column in WANDB_STEP_COLUMNS if column in frame.columns)
    if step_column != "global_step":  # W&B's own Step/_step counts log calls: curves over it are not over env steps
        raise PlotInputError(
            f"{path}: the chart's x-axis is W&B's '{step_column}' (its count of log calls), not env steps: set the "
            "chart's x-axis to global_step in the W&B UI and export it again"
        )
    steps = pd.to_numeric(frame[step_column], errors="coerce")
    records, other_tags = [], set()
    for column in frame.columns:
        if " - " not in column or column.endswith(("__MIN", "__MAX")):
            continue
        run_name, tag = column.rsplit(" - ", 1)
        if not tag.startswith(CURVE_TAG_PREFIXES):
            other_tags.add(tag)
            continue
        meta = known_runs.get(run_name)
        if meta is None:
            parsed = parse_run_name(run_name)
            if parsed is None:
                raise PlotInputError(
                    f"{path}: cannot tell env/method/seed of {run_name!r}; export ungrouped runs named "
                    "<env>__<script>__<seed>, or also pass the W&B runs-table export"
                )
            meta = _meta(parsed["env"], parsed["exp_name"], None, parsed["seed"], run_name, str(path))
        values = pd.to_numeric(frame[column], errors="coerce")
        source_meta = {**meta, "source": str(path)}
        records += [
            _record(source_meta, tag, value, int(step))
            for step, value in zip(steps, values)
            if pd.notna(step) and pd.notna(value)
        ]
    if not records and other_tags:
        raise PlotInputError(
            f"{path}: the chart export holds {', '.join(sorted(other_tags))}, which no table or figure uses: export "
            f"an {' or '.join(prefix + '*' for prefix in CURVE_TAG_PREFIXES)} chart (eval/episodic_return, "
            "eval/smoothness, ...)"
        )
    return records


def _wandb_api_records(project: str, filters: dict | None = None) -> list[dict]:
    """Records of the finished runs of a W&B project via the public API (summary + eval history)."""
    try:
        import wandb  # optional: only this online path needs it
    except ImportError:
        raise PlotInputError("reading a W&B project needs the wandb package (pip install wandb)") from None
    source = f"wandb:{project}"
    records = []
    for run in wandb.Api().runs(project, filters=filters):
        config = run.config
        if run.state != "finished" or not all(key in config for key in ("env_id", "exp_name", "seed")):
            continue
        meta = _meta(config["env_id"], config["exp_name"], config.get("script"), config["seed"], run.name, source)
        step = run.summary.get("global_step")
        for key, metric in SUMMARY_TO_METRIC.items():
            if run.summary.get(key) is not None:
                records.append(_record(meta, metric, run.summary[key], None if step is None else int(step)))
        for tag in (CURVE_RETURN, CURVE_SMOOTHNESS):
            records += [
                _record(meta, tag, row[tag], int(row["global_step"]))
                for row in run.scan_history(keys=["global_step", tag])
            ]
    return records


# ---------------------------------------------------------------------------------------------- helpers


def _meta(env, exp_name, script, seed, run_name, source: str) -> dict:
    """Identity columns of a run: backbone and method from the script name (W&B configs only have
    exp_name, which is the script name unless overridden), the cell tag from the run name."""
    name = script or exp_name
    if not name:
        raise PlotInputError(f"run {run_name!r}: neither script nor exp_name is given")
    parsed = parse_run_name(str(run_name))
    try:
        seed = int(float(seed))
    except (TypeError, ValueError):
        raise PlotInputError(f"run {run_name!r}: seed {seed!r} is not a number") from None
    return {"env": str(env), "backbone": parse_script(name)[0], "method": method_name(name, parsed["tag"] if parsed else ""),
            "seed": seed, "run_name": str(run_name), "source": source}


def _provenance(segments: list[dict]) -> dict:
    """The ``code`` and ``machine`` columns of a run from its results.json segments (one per training process)."""
    codes, machines = [], []
    for segment in segments:
        code = segment.get("code") or {}
        if code.get("commit"):
            codes.append(code["commit"][:12] + ("+dirty" if code.get("dirty") else ""))
        elif code.get("package_version"):
            codes.append(f"cleanrl_pave {code['package_version']}")
        machine = segment.get("machine") or {}
        if machine.get("gpu") or machine.get("cpu"):
            machines.append(machine.get("gpu") or machine["cpu"])
    return {"code": ",".join(dict.fromkeys(codes)), "machine": ",".join(dict.fromkeys(machines))}


def _record(meta: dict, metric: str, value, step=None, episode=None) -> dict:
    return {"code": "", "machine": "", **meta, "metric": metric, "value": float(value), "step": step, "episode": episode}


def _number(text: str) -> float | None:
    """A W&B CSV cell as a float; None for an empty or non-numeric cell."""
    value = pd.to_numeric(text, errors="coerce")
    return None if pd.isna(value) else float(value)


def _tidy(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records, columns=TIDY_COLUMNS)
    df = df.astype(
        {"env": str, "backbone": str, "method": str, "seed": "int64", "metric": str, "value": "float64",
         "step": "Int64", "episode": "Int64", "run_name": str, "source": str, "code": str, "machine": str}
    )
    order = ["backbone", "env", "method", "seed", "run_name", "metric", "step", "episode"]
    return df.sort_values(order, kind="stable").reset_index(drop=True)


def _keep_first_source(df: pd.DataFrame, sources: list[str]) -> pd.DataFrame:
    """Per (run_name, metric), keep the rows of the earliest input holding them (no double counting)."""
    rank = df["source"].map({source: i for i, source in enumerate(sources)})
    first = rank.groupby([df["run_name"], df["metric"]]).transform("min")
    return df[rank == first].reset_index(drop=True)
