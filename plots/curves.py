"""Learning curves: evaluation return and smoothness against env steps, mean ± std over seeds, one panel
per env, one line per method, written as PNG and PDF.

    python plots/curves.py --runs runs/ [--wandb-csv export.csv ...] [--wandb-project ENTITY/PROJECT]
        [--suite NAME] [--out figures/curves]

writes figures/curves_return.{png,pdf} and figures/curves_smoothness.{png,pdf}.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):
    # Run as `python plots/curves.py`: put the repository root on the path so `plots.*` imports resolve.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:
    import pandas as pd
    from matplotlib.figure import Figure  # pyplot-free figures render with Agg and hold no global state
except ImportError as error:  # the [plot] extra is missing: say so in one line, as the scripts do for box2d
    sys.exit(f"error: {Path(__file__).name} needs the plotting extra: pip install 'cleanrl_pave[plot]' ({error})")

from cleanrl_pave import methods
from plots.loader import CURVE_RETURN, CURVE_SMOOTHNESS, PlotInputError, load_runs, one_run_per_seed
from plots.tables import BACKBONE_ORDER, ENV_ORDER, METHOD_ORDER, in_paper_order, suite_layout

# How legends name methods, from the registry (tagged benchmark cells keep their tag: "PAVE [mpr+vfc]").
METHOD_LABELS = methods.METHOD_LABELS
# metric -> file-name part and y-axis label
CURVE_METRICS = {
    CURVE_RETURN: ("return", "evaluation return"),
    CURVE_SMOOTHNESS: ("smoothness", "smoothness sm (lower is smoother)"),
}


def curve_summary(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """mean, population std and number of seeds of ``metric`` per (backbone, env, method, step): one run per
    seed, at the steps every seed of the line has (`shared_steps`)."""
    return _summary(shared_steps(one_run_per_seed(df[df["metric"] == metric])), metric)


def shared_steps(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows at the steps that every seed of their (backbone, env, method) line has, so a line never averages
    different sets of seeds (a seed still running, runs of different lengths); warns once per line it shortens,
    naming each seed's last step."""
    kept = []
    for (backbone, env, method), line in rows.groupby(["backbone", "env", "method"], sort=False):
        steps_per_seed = line.groupby("seed")["step"].agg(lambda steps: frozenset(steps.dropna()))
        shared = frozenset.intersection(*steps_per_seed)
        if len(shared) < len(line["step"].dropna().unique()):
            ends = ", ".join(f"seed {seed} at {max(steps, default=0)}" for seed, steps in steps_per_seed.items())
            shown = f"up to step {max(shared)}" if shared else "none, as no step has them all"
            warnings.warn(f"{line_label(backbone, method)} on {env}: its seeds end at different steps ({ends}); "
                          f"the curve shows the steps all seeds have: {shown}")
        kept.append(line[line["step"].isin(shared)])
    return pd.concat(kept) if kept else rows


def _summary(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = rows[rows["metric"] == metric]
    if rows.empty:
        return pd.DataFrame(columns=["backbone", "env", "method", "step", "mean", "std", "n_seeds"])
    return (
        rows.groupby(["backbone", "env", "method", "step"])["value"]
        .agg(mean="mean", std=lambda values: values.std(ddof=0), n_seeds="size")
        .reset_index()
    )


def plot_curves(df: pd.DataFrame, out_prefix, metrics=tuple(CURVE_METRICS), suite: str | None = None) -> list[Path]:
    """Write ``<out_prefix>_<return|smoothness>.{png,pdf}`` for each metric with data; returns the paths.
    ``suite`` (a benchmark suite name) keeps only that suite's runs."""
    if suite is not None:
        df = suite_layout(suite).keep(df)
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    curves = shared_steps(one_run_per_seed(df[df["metric"].isin(metrics)]))  # all metrics at once: each warning once
    written = []
    for metric in metrics:
        summary = _summary(curves, metric)
        if summary.empty:
            continue
        name, ylabel = CURVE_METRICS.get(metric, (metric.replace("/", "_"), metric))
        figure = _figure(summary, metric, ylabel)
        for suffix in (".png", ".pdf"):
            path = out_prefix.with_name(f"{out_prefix.name}_{name}{suffix}")
            figure.savefig(path, dpi=150)
            written.append(path)
    if not written:
        raise PlotInputError(f"no {' or '.join(metrics)} curves among the loaded runs")
    return written


def line_label(backbone: str, method: str) -> str:
    """A legend entry: the backbone and the method as the paper writes them, e.g. "TD3 PAVE", "SAC PAVE [vfc]"."""
    name, bracket, tag = method.partition("[")
    return f"{backbone.upper()} {METHOD_LABELS.get(name, name)}" + (f" [{tag}" if bracket else "")


def _figure(summary: pd.DataFrame, metric: str, ylabel: str) -> Figure:
    envs = in_paper_order(summary["env"].unique(), ENV_ORDER)
    lines = [
        (backbone, method)
        for backbone in in_paper_order(summary["backbone"].unique(), BACKBONE_ORDER)
        for method in in_paper_order(summary.loc[summary["backbone"] == backbone, "method"].unique(), METHOD_ORDER)
    ]
    # Colours follow the line, not the panel, so a method looks the same in every env.
    colors = {line: f"C{index % 10}" for index, line in enumerate(lines)}
    columns = min(3, len(envs))
    rows = math.ceil(len(envs) / columns)
    # at least 6 inches wide, so a one-env figure still has room for its title
    width = max(4.2 * columns, 6.0)
    figure = Figure(figsize=(width, 3.2 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for axis, env in zip(axes, envs):
        panel = summary[summary["env"] == env]
        for line in lines:
            curve = panel[(panel["backbone"] == line[0]) & (panel["method"] == line[1])].sort_values("step")
            if curve.empty:
                continue
            steps = curve["step"].to_numpy(dtype=float)
            mean, std = curve["mean"].to_numpy(dtype=float), curve["std"].to_numpy(dtype=float)
            axis.plot(steps, mean, color=colors[line], marker="o", markersize=3, label=line_label(*line))
            axis.fill_between(steps, mean - std, mean + std, color=colors[line], alpha=0.2, linewidth=0)
        axis.set_title(env)
        axis.set_xlabel("env steps")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    for axis in axes[len(envs):]:
        axis.set_visible(False)
    legend = {}
    for axis in axes[: len(envs)]:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    # about 1.9 inches per entry ("SAC PAVE [mpr+vfc]" is the longest): more columns would run off the figure's edges
    figure.legend(legend.values(), legend.keys(), loc="outside lower center",
                  ncols=max(1, min(len(legend), 6, int(width // 1.9))))
    low, high = int(summary["n_seeds"].min()), int(summary["n_seeds"].max())
    seeds = f"{low} seed" if low == high == 1 else f"{low} seeds" if low == high else f"{low}-{high} seeds"
    figure.suptitle(f"{ylabel}: mean ± std over {seeds}")
    return figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Eval return / smoothness learning curves from cleanrl_pave runs.")
    parser.add_argument("--runs", nargs="+", default=[], metavar="PATH", help="runs/ trees or run directories")
    parser.add_argument("--wandb-csv", nargs="+", default=[], metavar="CSV", help="W&B UI chart exports (x-axis global_step)")
    parser.add_argument("--wandb-project", nargs="+", default=[], metavar="ENTITY/PROJECT", help="read runs via the W&B API (online)")
    parser.add_argument("--suite", help="only the runs of this benchmark suite (benchmark/suites/<name>.json)")
    parser.add_argument("--out", default="figures/curves", help="output prefix (default: figures/curves)")
    args = parser.parse_args(argv)
    warnings.formatwarning = lambda message, *_: f"warning: {message}\n"  # one line, without the source line
    inputs = [*args.runs, *args.wandb_csv]
    if not inputs and not args.wandb_project:
        parser.error("give at least one of --runs, --wandb-csv, --wandb-project")
    try:
        written = plot_curves(load_runs(inputs, args.wandb_project), args.out, suite=args.suite)
    except PlotInputError as error:
        sys.exit(f"error: {error}")
    for path in written:
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
