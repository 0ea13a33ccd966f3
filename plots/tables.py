"""Paper-style result tables: one row per (env, metric), one column per method, cells "mean (std)",
the best value per row in bold and the second best underlined.

    python plots/tables.py --runs runs/ [--wandb-csv export.csv ...] [--wandb-project ENTITY/PROJECT]
        [--suite NAME] [--format markdown|latex] [--std seeds|episodes] [--compare-paper]
        [--geometry DIR ...] [--out FILE]

Without ``--suite`` every loaded run is shown, one table per backbone and metric group (re/sm, and the
critic-geometry metrics when geometry JSONs were loaded). ``--suite td3_main`` (any benchmark suite) keeps
that suite's runs, shows all its envs and methods in the paper's order, and compares with the paper
tables that suite reproduces (``SUITE_PAPER_TABLES``).

std: by default the population std (ddof=0) across seeds of each seed's value (for re/sm: the mean over
that seed's evaluation episodes); ``--std episodes`` pools the evaluation episodes of all seeds instead,
which is what the authors' release computes (README: Evaluation and smoothness). Every caption says which one it uses.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

if __package__ in (None, ""):
    # Run as `python plots/tables.py`: put the repository root on the path so `plots.*` imports resolve.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

try:
    import pandas as pd
except ImportError as error:  # the [plot] extra is missing: say so in one line, as the scripts do for box2d
    sys.exit(f"error: {Path(__file__).name} needs the plotting extra: pip install 'cleanrl_pave[plot]' ({error})")

from cleanrl_pave import methods
from plots.loader import (
    GEOMETRY_METRICS,
    RETURN,
    RETURN_EPISODE,
    SMOOTHNESS,
    SMOOTHNESS_EPISODE,
    PlotInputError,
    load_runs,
    method_name,
    one_run_per_seed,
    parse_script,
)

PAPER_CSV = Path(__file__).with_name("paper_results.csv")

PERFORMANCE_METRICS = (RETURN, SMOOTHNESS)
EPISODE_METRIC = {RETURN: RETURN_EPISODE, SMOOTHNESS: SMOOTHNESS_EPISODE}
HIGHER_IS_BETTER = {
    RETURN: True, SMOOTHNESS: False,
    "M_sup": False, "M_mean": False, "ndef_rate": True, "trace_rate": True, "cos_mean": True, "flip_rate": False,
}
ENV_ORDER = (
    "LunarLanderContinuous-v3", "Pendulum-v1", "Reacher-v5", "Ant-v5", "Hopper-v5", "Walker2d-v5",
    "Humanoid-v5", "HalfCheetah-v5",
)
METHOD_ORDER = methods.METHOD_ORDER  # the registry's (cleanrl_pave/methods.py): the paper's column order
BACKBONE_ORDER = methods.BACKBONES
# Training steps of the paper's runs per env (its Tables 7-8; the scripts' defaults, which a test keeps equal).
PAPER_TRAINING_STEPS = {
    "Pendulum-v1": 100_000, "LunarLanderContinuous-v3": 500_000, "Reacher-v5": 500_000,
    "Ant-v5": 1_000_000, "Hopper-v5": 1_000_000, "Walker2d-v5": 1_000_000, "Humanoid-v5": 1_000_000,
}
# Paper tables (the `table` column of paper_results.csv) searched, first match wins, for a value: per benchmark
# suite, and without a suite.
SUITE_PAPER_TABLES = {
    "td3_main": ("table1_td3", "geometry_msup", "geometry_ndef", "geometry_cosine"),
    "sac_main": ("table2_sac",),
    "critic_centric": ("critic_centric",),
    "caps_pave": ("caps_plus_pave",),
    "ablation": ("ablation",),
    "quick": ("table1_td3",),  # far shorter runs than the paper's: its numbers show where full training ends up
}
PAPER_TABLE_PRIORITY = (
    "table1_td3", "table2_sac", "geometry_msup", "geometry_ndef", "geometry_cosine", "caps_plus_pave", "critic_centric",
)
# Per paper table, our method names that it spells differently.
PAPER_METHOD_NAMES = {
    "caps_plus_pave": {"caps_pave": "caps+pave"},
    # The ablation suite's full PAVE is the untagged run; the other cells are tagged with the terms left on.
    "ablation": {"pave": "mpr+vfc+curv", **{f"pave[{terms}]": terms for terms in ("mpr", "vfc", "curv", "mpr+vfc", "mpr+curv", "vfc+curv")}},
}
MISSING = "–"
DURING_TRAINING_METRICS = ("M_sup", "ndef_rate")  # the paper's table of critic geometry during training


@dataclass(frozen=True)
class SuiteLayout:
    """A benchmark suite's table: its envs (rows) and, per backbone, its methods (columns)."""

    name: str
    envs: tuple[str, ...]
    methods: dict[str, tuple[str, ...]]

    def keep(self, df: pd.DataFrame) -> pd.DataFrame:
        """The rows of a tidy table (or summary) that belong to this suite's runs."""
        allowed = {(backbone, method) for backbone, methods in self.methods.items() for method in methods}
        in_suite = [pair in allowed for pair in zip(df["backbone"], df["method"])]
        return df[df["env"].isin(self.envs) & pd.Series(in_suite, index=df.index, dtype=bool)]


def suite_layout(name: str) -> SuiteLayout:
    """Envs and methods of a benchmark suite (benchmark/suites/<name>.json), read with the runner's own
    loader so that tables and runner never disagree. Methods keep the paper's order; the cells of one
    script keep the suite file's order."""
    try:
        from benchmark.suite_loader import SuiteError, load_suite
    except ImportError:
        raise PlotInputError("--suite needs this repository's benchmark/ package on the path") from None
    try:
        runs = load_suite(name).runs
    except SuiteError as error:
        raise PlotInputError(str(error)) from None

    def paper_rank(method: str) -> int:
        base = method.split("[")[0]
        return METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)

    methods = {}
    for backbone in BACKBONE_ORDER:
        names = dict.fromkeys(method_name(run.script, run.tag) for run in runs if parse_script(run.script)[0] == backbone)
        if names:
            methods[backbone] = tuple(sorted(names, key=paper_rank))  # a stable sort keeps the file order of cells
    return SuiteLayout(name, in_paper_order({run.env_id for run in runs}, ENV_ORDER), methods)


_MARKUP = {
    "markdown": {"best": "**{}**", "second": "<u>{}</u>"},
    "latex": {"best": "\\textbf{{{}}}", "second": "\\underline{{{}}}"},
}


def summarize(df: pd.DataFrame, metrics=PERFORMANCE_METRICS, std: str = "seeds") -> pd.DataFrame:
    """mean, std, n_seeds, n_episodes per (backbone, env, method, metric) of the tidy table ``df``.

    Per run and metric the value at the latest step is used (e.g. the last geometry JSON of a run), and
    one run per seed (the newest). std="seeds": mean and population std of the per-seed values (NaN for
    a single seed). std="episodes": re/sm pool the evaluation episodes of all seeds (mean and population
    std over the pool); metrics without episodes (geometry) stay across seeds.
    """
    if std not in ("seeds", "episodes"):
        raise PlotInputError(f"std must be 'seeds' or 'episodes', not {std!r}")
    pooled_metrics = [metric for metric in metrics if std == "episodes" and metric in EPISODE_METRIC]
    wanted = set(metrics) | {EPISODE_METRIC[metric] for metric in pooled_metrics}
    rows = one_run_per_seed(_final_values(df[df["metric"].isin(wanted)]))
    groups = ["backbone", "env", "method", "metric"]

    per_seed = rows[rows["metric"].isin(set(metrics) - set(pooled_metrics))]
    across_seeds = (
        per_seed.groupby(groups)["value"]
        .agg(mean="mean", std=lambda values: values.std(ddof=0), n_seeds="size")
        .reset_index()
    )
    across_seeds.loc[across_seeds["n_seeds"] < 2, "std"] = np.nan  # one seed has no spread
    parts = [across_seeds.assign(n_episodes=pd.NA)]

    if pooled_metrics:
        episode_names = {EPISODE_METRIC[metric]: metric for metric in pooled_metrics}
        episodes = rows[rows["metric"].isin(episode_names)].assign(metric=lambda frame: frame["metric"].map(episode_names))
        finals = rows[rows["metric"].isin(pooled_metrics)]
        without = sorted(set(finals["run_name"]) - set(episodes["run_name"]))
        if without:
            raise PlotInputError(
                f"--std episodes needs per-episode values, which only results.json has; {len(without)} run(s) "
                f"have none, e.g. {without[0]}"
            )
        pooled = (
            episodes.groupby(groups)
            .agg(
                mean=("value", "mean"), std=("value", lambda values: values.std(ddof=0)),
                n_seeds=("seed", "nunique"), n_episodes=("value", "size"),
            )
            .reset_index()
        )
        parts.append(pooled)
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.DataFrame(columns=groups + ["mean", "std", "n_seeds", "n_episodes"])
    return pd.concat(parts, ignore_index=True).astype({"n_seeds": "Int64", "n_episodes": "Int64"})


def make_table(
    df: pd.DataFrame,
    metrics=PERFORMANCE_METRICS,
    fmt: str = "markdown",
    std: str = "seeds",
    suite: str | None = None,
    compare_paper: bool = False,
    paper_csv: Path = PAPER_CSV,
    paper_tables: tuple[str, ...] | None = None,
    envs: tuple[str, ...] | None = None,
) -> str:
    """The table of ``metrics`` (rows: env x metric, columns: methods) as markdown or LaTeX text, one per
    backbone. ``suite`` (a benchmark suite name) keeps its runs and shows all its envs and methods, with
    or without runs. With ``compare_paper`` every method column gets the paper's value and the
    difference ours - paper beside it, from the first of ``paper_tables`` holding the cell (default: the suite's
    tables, or all of the paper's main ones). ``envs`` keeps only those rows (the suite's or the paper's order stays)."""
    if fmt not in _MARKUP:
        raise PlotInputError(f"format must be 'markdown' or 'latex', not {fmt!r}")
    metrics = tuple(metrics)
    layout = suite_layout(suite) if suite else None
    if envs is not None:
        envs = tuple(envs)
        check_envs(envs, layout.envs if layout else tuple(df["env"].unique()), suite)
        df = df[df["env"].isin(envs)]
        if layout is not None:
            layout = replace(layout, envs=tuple(env for env in layout.envs if env in envs))
    summary = summarize(df, metrics, std)
    if layout is not None:
        summary = layout.keep(summary)
    if summary.empty:
        where = f" for suite {suite}" if suite else ""
        raise PlotInputError(f"no {'/'.join(metrics)} values among the loaded runs{where}")
    paper = load_paper_results(paper_csv) if compare_paper else None
    if compare_paper:
        warn_about_training_steps(layout.keep(df) if layout else df, metrics)
    if paper_tables is None:
        paper_tables = SUITE_PAPER_TABLES.get(suite, ()) if suite else PAPER_TABLE_PRIORITY
    backbones = tuple(layout.methods) if layout else in_paper_order(summary["backbone"].unique(), BACKBONE_ORDER)
    blocks = []
    for backbone in backbones:
        ours = summary[summary["backbone"] == backbone]
        envs = layout.envs if layout else in_paper_order(ours["env"].unique(), ENV_ORDER)
        methods = layout.methods[backbone] if layout else in_paper_order(ours["method"].unique(), METHOD_ORDER)
        paper_cells = _paper_cells(paper, backbone, paper_tables) if paper is not None else None
        blocks.append(_render(ours, backbone, envs, methods, metrics, fmt, std, suite, paper_cells))
    return "\n\n".join(blocks) + "\n"


def check_envs(envs, known: tuple[str, ...], suite: str | None) -> None:
    """--env names only envs of the suite (or, without one, of the loaded runs)."""
    unknown = [env for env in envs if env not in known]
    if unknown:
        where = f"suite {suite} envs" if suite else "the loaded runs envs"
        raise PlotInputError(f"--env {' '.join(unknown)}: not among {where} ({', '.join(known)})")


def provenance_line(df: pd.DataFrame, fmt: str = "markdown") -> str:
    """Which code and machines made the runs behind the cells: each commit and machine with its number of runs."""
    runs = df.groupby("run_name")[["code", "machine"]].agg(lambda values: next((v for v in values if v), ""))

    def counted(column: str) -> str:
        values = runs[column].replace("", "not recorded")
        counts = values.str.split(",").explode().value_counts()
        return ", ".join(f"{value} ({count} run{'s' if count > 1 else ''})" for value, count in counts.items())

    text = f"Runs: {len(runs)}; code: {counted('code')}; machines: {counted('machine')}.\n"
    return text.replace("_", "\\_") if fmt == "latex" else text


def per_run_table(paths: list[str]) -> str:
    """One markdown row per finished run (each results.json under `paths`), by run name: its final evaluation, its
    final critic's geometry (the geometry.json beside it, if any), its training time and segments (the processes
    that trained it, by start step), and the code and CPU that made it."""
    files = sorted({file for path in map(Path, paths)
                    for file in ([path] if path.is_file() else path.rglob("results.json"))},
                   key=lambda file: file.parent.name)
    if not files:
        raise PlotInputError(f"no results.json under {', '.join(paths)}")
    rows = ["| run | final return | final sm | mean \\|da\\| | final critic M_sup / NDef rate / cos | training time "
            "| segments (start steps) | code, CPU |", "|---|--:|--:|--:|---|--:|---|---|"]
    for file in files:
        results = json.loads(file.read_text())
        final, segments = results["eval"], results.get("segments", [])
        geometry_file = file.parent / "geometry.json"
        geometry = "–"
        if geometry_file.is_file():
            values = json.loads(geometry_file.read_text())
            geometry = f"{values['M_sup']:.2f} / {values['ndef_rate']:.3f} / {values['cos_mean']:.3f}"
        commits = dict.fromkeys(segment["code"]["commit"][:7] for segment in segments)
        cpus = dict.fromkeys(segment["machine"]["cpu"] for segment in segments)
        rows.append(
            f"| `{results['run_name']}` | {final['return_mean']:.1f} ({final['return_std']:.1f}) "
            f"| {final['smoothness_mean']:.3f} ({final['smoothness_std']:.3f}) | {final['action_change_mean']:.3f} "
            f"| {geometry} | {results['wall_time_s'] / 3600:.1f} h "
            f"| {len(segments)} ({', '.join(str(segment['start_step']) for segment in segments)}) "
            f"| {', '.join(commits) or 'not recorded'}, {', '.join(cpus) or 'not recorded'} |")
    return "\n".join(rows) + "\n"


def during_training_rows(df: pd.DataFrame, steps=None) -> pd.DataFrame:
    """The critic geometry runs logged during training (`--geometry-freq`, curves `geometry/<key>`) as one metric
    per key and step, `M_sup@100000`, so that the paper's during-training table renders like any other; `steps`
    (default: every logged step) picks the steps."""
    tags = {f"geometry/{key}" for key in DURING_TRAINING_METRICS}
    curves = df[df["metric"].isin(tags) & df["step"].notna()]
    if steps is not None:
        curves = curves[curves["step"].isin(list(steps))]
    metric = curves["metric"].str.removeprefix("geometry/") + "@" + curves["step"].astype("int64").astype(str)
    no_step = pd.Series(pd.NA, index=curves.index, dtype="Int64")  # the step is in the metric's name
    return curves.assign(metric=metric, step=no_step)


def during_training_table(df: pd.DataFrame, steps: list[int], **options) -> str:
    """The paper's during-training table: M_sup and NDef rate at `steps` (none: the paper's steps for the envs
    present), per method, from the geometry the runs logged during training; `--compare-paper` against the paper's
    during_training rows."""
    steps = steps or paper_during_training_steps(df["env"].unique())
    rows = during_training_rows(df, steps)
    if rows.empty:
        raise PlotInputError(f"no critic geometry logged during training at steps {steps} among the loaded runs "
                             "(train with --geometry-freq; a finished run needs its geometry_during_training.json)")
    present = set(rows["metric"])
    metrics = [f"{key}@{step}" for step in steps for key in DURING_TRAINING_METRICS if f"{key}@{step}" in present]
    return make_table(rows, metrics=metrics, paper_tables=("during_training",), **options)


def paper_during_training_steps(envs, path: Path = PAPER_CSV) -> list[int]:
    """The steps of the paper's during-training table for these envs (1e5, 3e5, 5e5 on LunarLander)."""
    paper = load_paper_results(path)
    rows = paper[(paper["table"] == "during_training") & paper["env_id"].isin(list(envs))]
    return sorted({int(metric.split("@")[1]) for metric in rows["metric"]})


def load_paper_results(path: Path = PAPER_CSV) -> pd.DataFrame:
    """paper_results.csv: table, backbone, env_id, method, metric, mean, std (may be empty), note."""
    if not Path(path).is_file():
        raise PlotInputError(f"no paper results file at {path}")
    paper = pd.read_csv(path, dtype={"table": str, "backbone": str, "env_id": str, "method": str, "metric": str, "note": str})
    return paper.assign(note=paper["note"].fillna(""))


def warn_about_training_steps(df: pd.DataFrame, metrics) -> None:
    """Warn, per env, when runs compared with the paper trained for other step counts than the paper's runs."""
    rows = df[df["metric"].isin(metrics) & df["env"].isin(PAPER_TRAINING_STEPS)].dropna(subset=["step"])
    for env, steps in rows.groupby("env")["step"]:
        other = sorted({int(step) for step in steps} - {PAPER_TRAINING_STEPS[env]})
        if other:
            warnings.warn(f"{env}: runs of {', '.join(f'{step:,}' for step in other)} steps are compared with the "
                          f"paper's {PAPER_TRAINING_STEPS[env]:,}-step runs")


# ---------------------------------------------------------------------------------------------- helpers


def _final_values(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (run, metric), the rows at the latest step (all rows when the step is unknown)."""
    step = rows["step"].astype("float64")
    latest = step.groupby([rows["run_name"], rows["metric"]]).transform("max")
    return rows[(step == latest) | latest.isna()]


def in_paper_order(names, preferred: tuple[str, ...]) -> tuple[str, ...]:
    """Names in the preferred (paper) order, unknown ones after it, alphabetically."""
    names = set(names)
    return tuple(name for name in preferred if name in names) + tuple(sorted(names - set(preferred)))


def _paper_cells(paper: pd.DataFrame, backbone: str, tables: tuple[str, ...]) -> dict:
    """{(env, method, metric): (mean, std, note, table)} from the first of ``tables`` holding the cell."""
    cells = {}
    for table in reversed(tables):  # reversed: a higher-priority table overwrites
        our_method = {paper_name: ours for ours, paper_name in PAPER_METHOD_NAMES.get(table, {}).items()}
        for row in paper[(paper["table"] == table) & (paper["backbone"] == backbone)].itertuples():
            key = (row.env_id, our_method.get(row.method, row.method), row.metric)
            cells[key] = (row.mean, row.std, row.note, table)
    return cells


def _decimals(values) -> int:
    """Decimals for a row: about 4 significant digits for its largest |value|, at most 3 decimals
    (4299, 227.8, 1.809, 0.053), as the paper prints them."""
    finite = [abs(value) for value in values if value is not None and math.isfinite(value)]
    largest = max(finite, default=0.0)
    if largest == 0:
        return 3
    return int(min(3, max(0, 3 - math.floor(math.log10(largest)))))


def _mean_std(mean: float, std: float, decimals: int) -> str:
    text = f"{mean:.{decimals}f}"
    return text if std is None or not math.isfinite(std) else f"{text} ({std:.{decimals}f})"


def _ranks(means: dict[str, float], higher_is_better: bool) -> dict[str, str]:
    """{method: "best"|"second"} for one row; ties share a mark, a row of equal values gets none.
    Marking needs at least 2 methods with values, and "second" at least 3 (with 2, second is simply last)."""
    finite = {method: value for method, value in means.items() if math.isfinite(value)}
    if len(finite) < 2:
        return {}
    distinct = sorted(set(finite.values()), reverse=higher_is_better)
    if len(distinct) == 1:  # all equal: nothing stands out
        return {}
    styles = {method: "best" for method, value in finite.items() if value == distinct[0]}
    if len(finite) >= 3 and len(distinct) > 1:
        styles |= {method: "second" for method, value in finite.items() if value == distinct[1]}
    return styles


def _render(ours, backbone, envs, methods, metrics, fmt, std, suite, paper_cells) -> str:
    """One backbone's table with its caption."""
    markup = _MARKUP[fmt]
    stats = {(row.env, row.method, row.metric): row for row in ours.itertuples()}
    header = ["env", "metric"]
    for method in methods:
        header += [method, f"{method} paper", f"{method} Δ"] if paper_cells is not None else [method]
    body, used_paper = [], set()
    for env in envs:
        for metric in metrics:
            means = {m: stats[(env, m, metric)].mean for m in methods if (env, m, metric) in stats}
            papers = {m: paper_cells.get((env, m, metric)) for m in methods} if paper_cells is not None else {}
            decimals = _decimals(list(means.values()) + [cell[0] for cell in papers.values() if cell])
            styles = _ranks(means, higher_is_better(metric))
            cells = [env, _metric_label(metric, fmt)]
            for method in methods:
                stat = stats.get((env, method, metric))
                text = MISSING if stat is None else _mean_std(stat.mean, stat.std, decimals)
                if method in styles:
                    text = markup[styles[method]].format(text)
                cells.append(text)
                if paper_cells is not None:
                    paper = papers[method]
                    if paper is None:
                        cells += [MISSING, MISSING]
                        continue
                    used_paper.add((paper[3], paper[2]))
                    cells.append(_mean_std(paper[0], paper[1], decimals))
                    cells.append(MISSING if stat is None else f"{stat.mean - paper[0]:+.{decimals}f}")
            body.append(cells)
    caption = _caption(ours, backbone, metrics, std, suite, used_paper if paper_cells is not None else None, fmt)
    return _markdown(caption, header, body) if fmt == "markdown" else _latex(caption, header, body, len(metrics))


def _caption(ours, backbone, metrics, std, suite, used_paper, fmt) -> str:
    """Says what the cells are: seeds/episodes per cell, which std, the marks, the paper columns."""
    title = backbone.upper() + (f", suite {suite}" if suite else "")
    seeds = _count_range(ours["n_seeds"])
    parts = [f"{title}: mean (std) over {seeds} seed(s) per cell."]
    pooled = [metric for metric in metrics if std == "episodes" and metric in EPISODE_METRIC]
    performance = [metric for metric in metrics if metric in EPISODE_METRIC and metric not in pooled]
    others = [metric for metric in metrics if metric not in EPISODE_METRIC]
    if pooled:
        episodes = _count_range(ours.loc[ours["metric"].isin(pooled), "n_episodes"])
        parts.append(
            f"{'/'.join(pooled)}: mean and population std (ddof=0) over the pooled evaluation episodes of all seeds "
            f"({episodes} episodes per cell; the release's convention)."
        )
    if performance:
        parts.append(f"{'/'.join(performance)}: population std (ddof=0) across seeds of each seed's mean over its evaluation episodes.")
    if others:
        parts.append(f"{'/'.join(others)}: population std (ddof=0) across seeds (one value per run).")
    arrows = "↑ higher is better, ↓ lower is better" if fmt == "markdown" else "$\\uparrow$ higher is better, $\\downarrow$ lower is better"
    parts.append(f"Bold: best, underlined: second best per env and metric; {arrows}; {MISSING}: no runs.")
    if used_paper is not None:
        tables = sorted({table for table, _ in used_paper})
        notes = sorted({note for _, note in used_paper if note})
        delta = "Δ" if fmt == "markdown" else "$\\Delta$"
        parts.append(f"'paper': plots/paper_results.csv ({', '.join(tables) or 'no matching rows'}); {delta} = ours - paper (means).")
        parts += [f"Paper note: {note}." for note in notes]
    text = " ".join(parts)
    return text.replace("_", "\\_") if fmt == "latex" else text


def _count_range(counts) -> str:
    counts = pd.Series(counts).dropna()
    if counts.empty:
        return "0"
    low, high = int(counts.min()), int(counts.max())
    return str(low) if low == high else f"{low}-{high}"


def higher_is_better(metric: str) -> bool:
    """Whether a metric improves upward; `M_sup@100000` is M_sup at step 1e5."""
    return HIGHER_IS_BETTER.get(metric.split("@")[0], True)


def _metric_label(metric: str, fmt: str) -> str:
    higher = higher_is_better(metric)
    if fmt == "markdown":
        return f"{metric} {'↑' if higher else '↓'}"
    arrow = "\\uparrow" if higher else "\\downarrow"
    return f"${_latex_escape(metric)}{arrow}$"


def _markdown(caption: str, header: list[str], body: list[list[str]]) -> str:
    lines = [caption, "", "| " + " | ".join(header) + " |", "|" + ":--|:--|" + "--:|" * (len(header) - 2)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def _latex(caption: str, header: list[str], body: list[list[str]], rows_per_env: int) -> str:
    header = [_latex_escape(name).replace("Δ", "$\\Delta$") for name in header]
    lines = [
        "% needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{caption}}}",
        "\\begin{tabular}{ll" + "r" * (len(header) - 2) + "}",
        "\\toprule",
        " & ".join(header) + " \\\\",
        "\\midrule",
    ]
    for index, cells in enumerate(body):
        if index and index % rows_per_env == 0:
            lines.append("\\midrule")
        env = _latex_escape(cells[0]) if index % rows_per_env == 0 else ""  # the env name once per block
        lines.append(" & ".join([env, *cells[1:]]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines)


def _latex_escape(text: str) -> str:
    for char in ("\\", "&", "%", "#", "_", "$"):
        text = text.replace(char, "\\" + char)
    return text


# ---------------------------------------------------------------------------------------------------- CLI


def tables_text(args: argparse.Namespace, inputs: list[str], options: dict) -> str:
    """The paper-style tables (or the during-training table) of the loaded runs, and the provenance line if asked."""
    df = load_runs(inputs, args.wandb_project)
    if args.suite:
        df = suite_layout(args.suite).keep(df)
    if args.env:  # checked before filtering, so a wrong name is named rather than reported as "no runs"
        check_envs(args.env, suite_layout(args.suite).envs if args.suite else tuple(df["env"].unique()), args.suite)
        df = df[df["env"].isin(args.env)]
    if args.during_training is not None:
        text = during_training_table(df, args.during_training, **options)
    else:
        present = set(df["metric"])
        metric_groups = [
            group for group in (
                [metric for metric in PERFORMANCE_METRICS if metric in present],
                [metric for metric in GEOMETRY_METRICS if metric in present],
            ) if group
        ]
        if not metric_groups:
            where = f" of suite {args.suite}" if args.suite else ""
            raise PlotInputError(f"no final evaluations (results.json, W&B summaries) or geometry JSONs among the loaded runs{where}")
        text = "\n".join(make_table(df, metrics=group, envs=args.env, **options) for group in metric_groups)
    if args.provenance:
        text += "\n" + provenance_line(df, args.format)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Paper-style tables (env x method, mean (std)) from cleanrl_pave runs.")
    parser.add_argument("--runs", nargs="+", default=[], metavar="PATH", help="runs/ trees, run directories or results.json files")
    parser.add_argument("--wandb-csv", nargs="+", default=[], metavar="CSV", help="W&B UI exports: runs table and/or chart CSVs")
    parser.add_argument("--wandb-project", nargs="+", default=[], metavar="ENTITY/PROJECT", help="read finished runs via the W&B API (online)")
    parser.add_argument("--geometry", nargs="+", default=[], metavar="DIR", help="directories or files of critic-geometry JSONs")
    parser.add_argument("--suite", help="a benchmark suite (benchmark/suites/<name>.json): its runs, envs, methods and paper tables")
    parser.add_argument("--env", nargs="+", metavar="ENV", help="only these envs' rows (default: every env of the suite or runs)")
    parser.add_argument("--format", choices=list(_MARKUP), default="markdown")
    parser.add_argument("--std", choices=("seeds", "episodes"), default="seeds", help="std across seeds (default) or over pooled episodes")
    parser.add_argument("--compare-paper", action="store_true", help="put the paper's values and ours - paper beside each method")
    parser.add_argument("--during-training", nargs="*", type=int, default=None, metavar="STEP",
                        help="the table of critic geometry during training (M_sup, NDef rate) from runs logged with "
                             "--geometry-freq, at these steps (default: the paper's steps for the envs present)")
    parser.add_argument("--per-run", action="store_true",
                        help="one row per finished run of --runs (final numbers, geometry, time, segments, code and CPU)")
    parser.add_argument("--provenance", action="store_true",
                        help="add a line saying which commits and machines the cells' runs come from")
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    warnings.formatwarning = lambda message, *_: f"warning: {message}\n"  # one line, without the source line
    inputs = [*args.runs, *args.wandb_csv, *args.geometry]
    if not inputs and not args.wandb_project:
        parser.error("give at least one of --runs, --wandb-csv, --wandb-project, --geometry")
    options = dict(fmt=args.format, std=args.std, suite=args.suite, compare_paper=args.compare_paper)
    if args.per_run and not args.runs:
        parser.error("--per-run reads results.json files: give --runs")
    try:
        text = per_run_table(args.runs) if args.per_run else tables_text(args, inputs, options)
    except PlotInputError as error:
        sys.exit(f"error: {error}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
