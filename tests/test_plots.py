"""Tests of plots/: the tidy loader, the paper-style tables and the learning curves.

A fake runs/ tree is written by hand (results.json files and real TensorBoard event files with known
values), and every expectation is computed here from those raw numbers with numpy, not with plots code.
"""

import csv
import json
import os
import subprocess
import sys
import types
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # plots/ is not part of the installed cleanrl_pave package

from plots.curves import _figure, curve_summary, plot_curves  # noqa: E402
from plots.loader import TIDY_COLUMNS, PlotInputError, load_runs, load_wandb_api, parse_run_name, parse_script  # noqa: E402
from plots.tables import PAPER_TRAINING_STEPS, make_table, summarize  # noqa: E402

ENVS = ("Pendulum-v1", "Hopper-v5")
SCRIPTS = {"td3_continuous": "base", "td3_caps_continuous": "caps", "td3_pave_continuous": "pave"}
SEEDS = (1, 2, 3)
START_TIME = 1700000000
TOTAL_STEPS = 3000
# (final return centre, final smoothness centre) per env and method; the per-seed means average to the
# centre, so the ranking is known: Hopper re pave > caps > base, sm caps < pave < base;
# Pendulum re base > pave > caps, sm pave < caps < base.
CENTRES = {
    ("Hopper-v5", "base"): (1000.0, 3.0),
    ("Hopper-v5", "caps"): (2000.0, 1.0),
    ("Hopper-v5", "pave"): (3000.0, 2.0),
    ("Pendulum-v1", "base"): (-150.0, 1.5),
    ("Pendulum-v1", "caps"): (-200.0, 0.5),
    ("Pendulum-v1", "pave"): (-160.0, 0.3),
}
HIGHER_IS_BETTER = {"re": True, "sm": False}


def episode_values(centre: float, seed: int) -> list[float]:
    """Two evaluation episodes; seeds differ in their mean AND their spread, so the across-seed std and
    the pooled-episode std differ."""
    scale = abs(centre) / 100
    return [centre + scale * (10 * (seed - 2) - 5 * seed), centre + scale * (10 * (seed - 2) + 5 * seed)]


def run_name(env: str, script: str, seed: int, start: int = START_TIME) -> str:
    return f"{env}__{script}__{seed}__{start}"


def make_results(env: str, script: str, seed: int, centres: tuple[float, float] | None = None, name: str | None = None) -> dict:
    """A results.json payload in the contracts.md format; eval_history ends with the final evaluation."""
    centre_re, centre_sm = centres or CENTRES[(env, SCRIPTS[script])]
    returns, smoothness = episode_values(centre_re, seed), episode_values(centre_sm, seed)
    history = [
        {"step": step, "return_mean": value, "smoothness_mean": sm, "return_std": 0.0, "smoothness_std": 0.0}
        for step, value, sm in zip((1000, 2000), (seed * 10.0, seed * 20.0), (seed * 0.5, seed * 0.25))
    ]
    history.append({"step": TOTAL_STEPS, "return_mean": float(np.mean(returns)), "smoothness_mean": float(np.mean(smoothness)),
                    "return_std": float(np.std(returns)), "smoothness_std": float(np.std(smoothness))})
    return {
        "script": script, "exp_name": script, "env_id": env, "seed": seed, "run_name": name or run_name(env, script, seed),
        "total_timesteps": TOTAL_STEPS, "global_step": TOTAL_STEPS, "wall_time_s": 1.0, "sps": 3000.0,
        "config": {"env_id": env, "seed": seed, "exp_name": script},
        "eval": {
            "episode_returns": returns, "episode_smoothness": smoothness, "episode_lengths": [200, 200],
            "episode_action_change": [0.1, 0.1],
            "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
            "smoothness_mean": float(np.mean(smoothness)), "smoothness_std": float(np.std(smoothness)),
        },
        "eval_history": history,
    }


def write_run(root: Path, results: dict, with_results: bool = True, with_events: bool = True) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    run_dir = root / results["run_name"]
    run_dir.mkdir(parents=True)
    if with_results:
        (run_dir / "results.json").write_text(json.dumps(results))
    if with_events:
        writer = SummaryWriter(str(run_dir))
        for point in results["eval_history"]:
            writer.add_scalar("eval/episodic_return", point["return_mean"], point["step"])
            writer.add_scalar("eval/smoothness", point["smoothness_mean"], point["step"])
            writer.add_scalar("geometry/M_sup", 0.5 * point["step"], point["step"])
            writer.add_scalar("losses/qf1_loss", 1.0, point["step"])  # not a curve tag: must be ignored
        writer.close()
    return run_dir


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fake") / "runs"
    for env in ENVS:
        for script in SCRIPTS:
            for seed in SEEDS:
                write_run(root, make_results(env, script, seed))
    return root


@pytest.fixture(scope="module")
def all_results() -> list[dict]:
    return [make_results(env, script, seed) for env in ENVS for script in SCRIPTS for seed in SEEDS]


def expected_stats(env: str, method: str, metric: str) -> dict:
    """mean, across-seed std and pooled-episode std computed straight from the raw episode lists."""
    centre = CENTRES[(env, method)][0 if metric == "re" else 1]
    per_seed = [episode_values(centre, seed) for seed in SEEDS]
    seed_means = [np.mean(episodes) for episodes in per_seed]
    pooled = [value for episodes in per_seed for value in episodes]
    return {"mean": np.mean(seed_means), "std_seeds": np.std(seed_means), "std_episodes": np.std(pooled), "pooled_mean": np.mean(pooled)}


def markdown_cells(text: str) -> dict:
    """{(env, metric): {column: cell}} of a markdown table made by make_table (one table in text)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[(cells[0], cells[1].split()[0])] = dict(zip(header, cells))
    return rows


def expected_marks(env: str, metric: str) -> dict:
    """{method: "best"|"second"|None} from the known centres."""
    centres = {method: CENTRES[(env, method)][0 if metric == "re" else 1] for method in SCRIPTS.values()}
    ranked = sorted(centres, key=centres.get, reverse=HIGHER_IS_BETTER[metric])
    return {method: {0: "best", 1: "second"}.get(ranked.index(method)) for method in centres}


# ----------------------------------------------------------------------------------------------- loader


@pytest.mark.parametrize(
    "script, expected",
    [
        ("td3_pave_continuous", ("td3", "pave")),
        ("td3_continuous", ("td3", "base")),
        ("sac_continuous", ("sac", "base")),
        ("sac_caps_pave_continuous", ("sac", "caps_pave")),
        ("td3_gp_critic_continuous", ("td3", "gp_critic")),
    ],
)
def test_parse_script(script, expected):
    assert parse_script(script) == expected


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Hopper-v5__td3_pave_continuous__1__1700000000", {"env": "Hopper-v5", "exp_name": "td3_pave_continuous", "seed": 1, "tag": ""}),
        ("Hopper-v5__td3_pave_continuous__178132", {"env": "Hopper-v5", "exp_name": "td3_pave_continuous", "seed": 178132, "tag": ""}),
        ("Walker2d-v5__td3_pave_continuous__mpr+vfc__178132",
         {"env": "Walker2d-v5", "exp_name": "td3_pave_continuous", "seed": 178132, "tag": "mpr+vfc"}),
        ("my-run", None),
    ],
)
def test_parse_run_name(name, expected):
    assert parse_run_name(name) == expected


def test_parse_script_rejects_other_names():
    with pytest.raises(PlotInputError):
        parse_script("ppo_continuous_action")


def test_tidy_table_from_local_logs(runs_dir, all_results):
    df = load_runs([runs_dir])
    assert list(df.columns) == TIDY_COLUMNS
    assert str(df["step"].dtype) == "Int64" and str(df["episode"].dtype) == "Int64"
    assert set(df["metric"]) == {"re", "sm", "re_episode", "sm_episode", "eval/episodic_return", "eval/smoothness"}
    assert set(df["method"]) == {"base", "caps", "pave"} and set(df["backbone"]) == {"td3"}
    for results in all_results:
        run = df[df["run_name"] == results["run_name"]]
        assert set(run["env"]) == {results["env_id"]} and set(run["seed"]) == {results["seed"]}
        assert set(run["method"]) == {SCRIPTS[results["script"]]}
        final = run[run["metric"] == "re"]
        assert final["value"].tolist() == [results["eval"]["return_mean"]]
        assert final["step"].tolist() == [TOTAL_STEPS]
        episodes = run[run["metric"] == "sm_episode"].sort_values("episode")
        assert episodes["value"].tolist() == results["eval"]["episode_smoothness"]
        assert episodes["episode"].tolist() == [0, 1]
        # a finished run's curve comes from results.json (float64), not its event files (float32)
        curve = run[run["metric"] == "eval/episodic_return"].sort_values("step")
        assert curve["step"].tolist() == [point["step"] for point in results["eval_history"]]
        assert curve["value"].tolist() == [point["return_mean"] for point in results["eval_history"]]


def test_event_files_of_runs_without_results(tmp_path):
    finished = make_results("Hopper-v5", "td3_pave_continuous", 7)
    running = make_results("Hopper-v5", "td3_pave_continuous", 8)
    write_run(tmp_path, finished)
    write_run(tmp_path, running, with_results=False)
    df = load_runs(tmp_path)
    in_progress = df[df["run_name"] == running["run_name"]]  # identity from the directory name
    assert set(in_progress["metric"]) == {"eval/episodic_return", "eval/smoothness", "geometry/M_sup"}
    assert set(in_progress["env"]) == {"Hopper-v5"} and set(in_progress["method"]) == {"pave"} and set(in_progress["seed"]) == {8}
    curve = in_progress[in_progress["metric"] == "eval/smoothness"].sort_values("step")
    assert curve["step"].tolist() == [point["step"] for point in running["eval_history"]]
    # TensorBoard stores float32
    assert curve["value"].tolist() == [float(np.float32(point["smoothness_mean"])) for point in running["eval_history"]]
    m_sup = in_progress[in_progress["metric"] == "geometry/M_sup"]
    assert m_sup["value"].tolist() == [float(np.float32(0.5 * point["step"])) for point in running["eval_history"]]
    assert set(df.loc[df["metric"] == "re", "run_name"]) == {finished["run_name"]}


def test_bad_inputs_give_one_line_errors(tmp_path):
    with pytest.raises(PlotInputError, match="no such file or directory"):
        load_runs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PlotInputError, match="no runs found"):
        load_runs([tmp_path / "empty"])
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(PlotInputError, match="not a W&B export"):
        load_runs([tmp_path / "other.csv"])


def test_newest_run_of_a_seed_is_used(runs_dir, tmp_path):
    root = tmp_path / "runs"
    for results in (make_results("Hopper-v5", "td3_pave_continuous", 1), make_results("Hopper-v5", "td3_caps_continuous", 1)):
        write_run(root, results, with_events=False)
    stale = make_results("Hopper-v5", "td3_pave_continuous", 1)
    stale["run_name"] = run_name("Hopper-v5", "td3_pave_continuous", 1, START_TIME - 100)
    stale["eval"]["return_mean"] = -1e9
    write_run(root, stale, with_events=False)
    with pytest.warns(UserWarning, match="several runs share a seed"):
        summary = summarize(load_runs(root), ["re"])
    pave = summary[summary["method"] == "pave"].iloc[0]
    assert pave["mean"] == np.mean(episode_values(3000.0, 1)) and pave["n_seeds"] == 1
    assert np.isnan(pave["std"])  # one seed has no across-seed std


# ----------------------------------------------------------------------------------------------- tables


def test_table_numbers_std_across_seeds(runs_dir):
    df = load_runs(runs_dir)
    summary = summarize(df, ["re", "sm"], std="seeds")
    assert len(summary) == len(ENVS) * len(SCRIPTS) * 2
    for row in summary.itertuples():
        expected = expected_stats(row.env, row.method, row.metric)
        assert row.mean == pytest.approx(expected["mean"], rel=1e-12)
        assert row.std == pytest.approx(expected["std_seeds"], rel=1e-12)
        assert row.n_seeds == len(SEEDS)
    cells = markdown_cells(make_table(df))
    hopper_pave = expected_stats("Hopper-v5", "pave", "re")
    # >= 1000: no decimals; pave has the best Hopper return, so it is bold
    assert cells[("Hopper-v5", "re")]["pave"] == f"**{hopper_pave['mean']:.0f} ({hopper_pave['std_seeds']:.0f})**"
    pendulum_caps = expected_stats("Pendulum-v1", "caps", "sm")
    assert cells[("Pendulum-v1", "sm")]["caps"] == f"<u>{pendulum_caps['mean']:.3f} ({pendulum_caps['std_seeds']:.3f})</u>"


def test_bold_best_underline_second(runs_dir):
    df = load_runs(runs_dir)
    markdown = markdown_cells(make_table(df))
    latex = make_table(df, fmt="latex")
    for env in ENVS:
        for metric in ("re", "sm"):
            for method, mark in expected_marks(env, metric).items():
                cell = markdown[(env, metric)][method]
                assert cell.startswith("**") == (mark == "best"), (env, metric, method, cell)
                assert cell.startswith("<u>") == (mark == "second"), (env, metric, method, cell)
    # LaTeX: the Hopper sm row marks caps best and pave second (lower is better)
    hopper_rows = latex.split("Hopper-v5", 1)[1].splitlines()
    sm_row = next(line for line in hopper_rows if "downarrow" in line)
    base, caps, pave = [cell.strip() for cell in sm_row.rstrip("\\ ").split("&")[2:]]
    assert caps.startswith("\\textbf{") and pave.startswith("\\underline{") and base[0].isdigit()


def test_std_over_pooled_episodes(runs_dir):
    df = load_runs(runs_dir)
    summary = summarize(df, ["re", "sm"], std="episodes")
    for row in summary.itertuples():
        expected = expected_stats(row.env, row.method, row.metric)
        assert row.mean == pytest.approx(expected["pooled_mean"], rel=1e-12)
        assert row.std == pytest.approx(expected["std_episodes"], rel=1e-12)
        assert row.std != pytest.approx(expected["std_seeds"])  # the two conventions really differ here
        assert row.n_episodes == 2 * len(SEEDS)
    assert "pooled evaluation episodes" in make_table(df, std="episodes")
    assert "across seeds" in make_table(df, std="seeds")


def test_compare_paper_difference(runs_dir):
    paper = paper_row("table1_td3", "Hopper-v5", "pave", "re")
    paper_mean, paper_std = float(paper["mean"]), float(paper["std"])
    ours = expected_stats("Hopper-v5", "pave", "re")["mean"]
    text = make_table(load_runs(runs_dir), compare_paper=True)
    row = markdown_cells(text)[("Hopper-v5", "re")]
    assert row["pave paper"] == f"{paper_mean:.0f} ({paper_std:.0f})"
    assert row["pave Δ"] == f"{ours - paper_mean:+.0f}"
    assert paper["note"] in text  # the paper's std convention is stated


def test_compare_paper_warns_when_runs_trained_for_other_step_counts(runs_dir, tmp_path):
    with pytest.warns(UserWarning) as caught:
        make_table(load_runs(runs_dir), compare_paper=True)
    assert sorted(str(warning.message) for warning in caught) == [
        "Hopper-v5: runs of 3,000 steps are compared with the paper's 1,000,000-step runs",
        "Pendulum-v1: runs of 3,000 steps are compared with the paper's 100,000-step runs"]
    paper_length = tmp_path / "runs"
    for seed in SEEDS:
        write_run(paper_length, make_results("Pendulum-v1", "td3_pave_continuous", seed) | {"global_step": 100_000},
                  with_events=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the paper's step count: nothing to warn about
        make_table(load_runs(paper_length), compare_paper=True)
        make_table(load_runs(runs_dir))  # no comparison, no warning


@pytest.mark.parametrize("script", ["td3_continuous", "sac_continuous"])
def test_paper_training_steps_are_the_scripts_defaults(script):
    module = __import__(f"cleanrl_pave.{script}", fromlist=["Args"])
    for env, steps in PAPER_TRAINING_STEPS.items():
        assert module.resolve_args(module.Args(env_id=env)).total_timesteps == steps, env


def paper_row(table: str, env: str, method: str, metric: str) -> dict:
    with open(REPO / "plots" / "paper_results.csv", newline="") as file:
        return next(
            row for row in csv.DictReader(file)
            if (row["table"], row["env_id"], row["method"], row["metric"]) == (table, env, method, metric)
        )


def test_compare_paper_picks_the_main_table_first():
    """LunarLander base re is in table1_td3 (227.8) and critic_centric (228, rounded): the main table wins;
    CAPS + PAVE exists only in caps_plus_pave, spelled caps+pave there."""
    env = "LunarLanderContinuous-v3"
    df = pd.DataFrame(
        [
            {"env": env, "backbone": "td3", "method": method, "seed": seed, "metric": "re", "value": value,
             "step": 1000, "episode": pd.NA, "run_name": f"{env}__td3_{method}_continuous__{seed}__1", "source": "hand"}
            for method, values in (("base", (200.0, 210.0)), ("caps_pave", (260.0, 270.0)))
            for seed, value in enumerate(values)
        ]
    ).astype({"step": "Int64", "episode": "Int64"})
    cells = markdown_cells(make_table(df, metrics=["re"], compare_paper=True))[(env, "re")]
    base = paper_row("table1_td3", env, "base", "re")
    assert cells["base paper"] == f"{float(base['mean']):.1f} ({float(base['std']):.1f})"
    caps_pave = paper_row("caps_plus_pave", env, "caps+pave", "re")
    assert cells["caps_pave paper"] == f"{float(caps_pave['mean']):.1f}"
    assert cells["caps_pave Δ"] == f"{265.0 - float(caps_pave['mean']):+.1f}"


def test_suite_selects_and_orders(runs_dir):
    text = make_table(load_runs(runs_dir), suite="td3_main")
    header = next(line for line in text.splitlines() if line.startswith("| env"))
    assert [cell.strip() for cell in header.strip("|").split("|")] == ["env", "metric", "base", "caps", "grad", "asap", "pave"]
    cells = markdown_cells(text)
    assert cells[("Ant-v5", "re")]["pave"] == "–"  # suite envs without runs are shown empty
    assert list(dict.fromkeys(env for env, _ in cells)) == [
        "LunarLanderContinuous-v3", "Pendulum-v1", "Reacher-v5", "Ant-v5", "Hopper-v5", "Walker2d-v5"]
    with pytest.raises(PlotInputError, match="unknown suite"):
        make_table(load_runs(runs_dir), suite="no_such_suite")


def test_ablation_suite_with_benchmark_run_names(tmp_path):
    """Benchmark run names carry the cell tag (<env>__<script>__<tag>__<seed>); tagged cells are their own
    methods, and the ablation suite compares them with the paper's ablation rows."""
    env, seeds = "Walker2d-v5", (1, 3)
    cells = {("td3_continuous", ""): 4000.0, ("td3_pave_continuous", ""): 5000.0, ("td3_pave_continuous", "mpr"): 4500.0}
    for (script, tag), centre in cells.items():
        for seed in seeds:
            name = "__".join([env, script, *([tag] if tag else []), str(seed)])
            write_run(tmp_path, make_results(env, script, seed, (centre, 1.0), name), with_events=False)
    df = load_runs(tmp_path)
    assert set(df["method"]) == {"base", "pave", "pave[mpr]"}
    assert set(df["seed"]) == set(seeds)
    table = markdown_cells(make_table(df, suite="ablation", compare_paper=True))
    walker = table[(env, "re")]
    paper_mpr = float(paper_row("ablation", env, "mpr", "re")["mean"])
    paper_full = float(paper_row("ablation", env, "mpr+vfc+curv", "re")["mean"])
    ours_mpr, ours_full = (np.mean([np.mean(episode_values(centre, seed)) for seed in seeds]) for centre in (4500.0, 5000.0))
    assert walker["pave[mpr] paper"] == f"{paper_mpr:.0f}" and walker["pave[mpr] Δ"] == f"{ours_mpr - paper_mpr:+.0f}"
    assert walker["pave paper"] == f"{paper_full:.0f}" and walker["pave Δ"] == f"{ours_full - paper_full:+.0f}"
    assert walker["pave"].startswith("**") and walker["pave[mpr+vfc]"] == "–"
    assert list(walker)[:3] == ["env", "metric", "base"]


def test_geometry_tables(tmp_path):
    geometry = {("base", 1): (100.0, 0.2), ("base", 2): (120.0, 0.3), ("pave", 1): (10.0, 0.8), ("pave", 2): (14.0, 0.9)}
    for (method, seed), (m_sup, ndef) in geometry.items():
        script = "td3_continuous" if method == "base" else "td3_pave_continuous"
        payload = {"script": script, "env_id": "Hopper-v5", "seed": seed, "M_sup": m_sup, "M_mean": m_sup / 2,
                   "ndef_rate": ndef, "trace_rate": ndef, "cos_mean": 0.5, "flip_rate": 0.1}
        (tmp_path / f"{method}_{seed}.json").write_text(json.dumps(payload))
    df = load_runs(tmp_path)
    cells = markdown_cells(make_table(df, metrics=["M_sup", "ndef_rate"]))
    # the row's largest value is 110, so one decimal; lower M_sup is better
    assert cells[("Hopper-v5", "M_sup")]["pave"] == f"**{np.mean([10.0, 14.0]):.1f} ({np.std([10.0, 14.0]):.1f})**"
    assert cells[("Hopper-v5", "M_sup")]["base"] == f"{np.mean([100.0, 120.0]):.1f} ({np.std([100.0, 120.0]):.1f})"
    assert cells[("Hopper-v5", "ndef_rate")]["pave"].startswith("**")  # higher is better for NDef
    assert not cells[("Hopper-v5", "ndef_rate")]["base"].startswith(("**", "<u>"))


# ------------------------------------------------------------------------------------------------ curves


def test_curves_write_png_and_pdf(runs_dir, tmp_path):
    written = plot_curves(load_runs(runs_dir), tmp_path / "figs" / "curves")
    names = sorted(path.name for path in written)
    assert names == ["curves_return.pdf", "curves_return.png", "curves_smoothness.pdf", "curves_smoothness.png"]
    for path in written:
        head = path.read_bytes()[:8]
        assert head.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF"), path


def test_curve_legend_names_backbone_and_method_title_the_seeds_markers_the_evaluations(runs_dir):
    df = load_runs(runs_dir)
    figure = _figure(curve_summary(df, "eval/episodic_return"), "eval/episodic_return", "evaluation return")
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["TD3 base", "TD3 CAPS", "TD3 PAVE"]
    assert figure.get_suptitle() == "evaluation return: mean ± std over 3 seeds"
    curves = [line for axis in figure.axes for line in axis.get_lines()]
    assert len(curves) == len(ENVS) * len(SCRIPTS)
    assert all(line.get_marker() == "o" and list(line.get_xdata()) == [1000, 2000, TOTAL_STEPS] for line in curves)
    sac = df.assign(backbone="sac", method=df["method"].replace({"pave": "pave[vfc]"}))
    both = _figure(curve_summary(pd.concat([df, sac[sac["seed"] < 3]]), "eval/smoothness"), "eval/smoothness", "sm")
    assert [text.get_text() for text in both.legends[0].get_texts()] == [
        "TD3 base", "TD3 CAPS", "TD3 PAVE", "SAC base", "SAC CAPS", "SAC PAVE [vfc]"]
    assert both.get_suptitle() == "sm: mean ± std over 2-3 seeds"


def test_curve_legend_stays_inside_a_one_env_figure(runs_dir):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    df = load_runs(runs_dir)
    one_env = df[df["env"] == ENVS[0]]
    sac = one_env.assign(backbone="sac", method=one_env["method"].replace({"pave": "pave[mpr+vfc]"}))
    figure = _figure(curve_summary(pd.concat([one_env, sac]), "eval/smoothness"), "eval/smoothness", "sm")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    legend = figure.legends[0].get_window_extent(canvas.get_renderer())
    assert len(figure.legends[0].get_texts()) == 6
    assert 0 <= legend.x0 and legend.x1 <= figure.bbox.x1 and 0 <= legend.y0, (legend, figure.bbox)


def test_curve_mean_and_std_over_seeds(runs_dir):
    summary = curve_summary(load_runs(runs_dir), "eval/episodic_return")
    point = summary[(summary["env"] == "Hopper-v5") & (summary["method"] == "caps") & (summary["step"] == 2000)].iloc[0]
    values = [np.float32(seed * 20.0) for seed in SEEDS]
    assert point["mean"] == pytest.approx(np.mean(values)) and point["std"] == pytest.approx(np.std(values))


def test_curves_of_seeds_with_different_lengths_stop_where_all_have_data_and_warn_once(tmp_path):
    # seed 2 ends at 2000 (still running, or trained shorter): averaging it in at 3000 would mix seed sets
    root = tmp_path / "runs"
    for seed in SEEDS:
        results = make_results("Hopper-v5", "td3_continuous", seed)
        if seed == 2:
            results["eval_history"] = results["eval_history"][:2]
        write_run(root, results, with_events=False)
    summary = curve_summary(load_runs(root), "eval/episodic_return")
    assert list(summary["step"]) == [1000, 2000] and list(summary["n_seeds"]) == [3, 3]
    assert summary["mean"].tolist() == pytest.approx([np.mean([10.0 * s for s in SEEDS]), np.mean([20.0 * s for s in SEEDS])])
    done = subprocess.run([sys.executable, str(REPO / "plots" / "curves.py"), "--runs", str(root), "--out",
                           str(tmp_path / "curves")], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert warned == ["warning: TD3 base on Hopper-v5: its seeds end at different steps (seed 1 at 3000, seed 2 at "
                      "2000, seed 3 at 3000); the curve shows the steps all seeds have: up to step 2000"], done.stderr


# --------------------------------------------------------------------------------------------------- W&B


def write_wandb_exports(directory: Path, all_results: list[dict]) -> list[Path]:
    """The runs-table export and two chart exports, as the W&B UI writes them (every cell quoted)."""
    runs_table = directory / "wandb_export_runs.csv"
    header = ["Name", "State", "Notes", "User", "Tags", "Created", "Runtime", "Sweep",
              "env_id", "exp_name", "seed", "total_timesteps", "charts/SPS", "eval/episodic_return", "eval/smoothness", "global_step"]
    with open(runs_table, "w", newline="") as file:
        writer = csv.writer(file, quoting=csv.QUOTE_ALL)
        writer.writerow(header)
        for results in all_results:
            writer.writerow([results["run_name"], "finished", "-", "someone", "", "2026-01-01T00:00:00.000Z", "12", "",
                             results["env_id"], results["exp_name"], str(results["seed"]), str(TOTAL_STEPS), "3000",
                             repr(results["eval"]["return_mean"]), repr(results["eval"]["smoothness_mean"]), str(TOTAL_STEPS)])
        # a crashed run: its summary is not a final evaluation and must be left out
        writer.writerow(["Hopper-v5__td3_pave_continuous__9__1", "crashed", "-", "someone", "", "2026-01-01T00:00:00.000Z",
                         "5", "", "Hopper-v5", "td3_pave_continuous", "9", str(TOTAL_STEPS), "3000", "99999", "0.001", "1000"])
    charts = []
    for tag, key, step_column in (("eval/episodic_return", "return_mean", "global_step"), ("eval/smoothness", "smoothness_mean", "global_step")):
        path = directory / f"wandb_export_{key}.csv"
        columns = [step_column]
        for results in all_results:
            columns += [f"{results['run_name']} - {tag}", f"{results['run_name']} - {tag}__MIN", f"{results['run_name']} - {tag}__MAX"]
        with open(path, "w", newline="") as file:
            writer = csv.writer(file, quoting=csv.QUOTE_ALL)
            writer.writerow(columns)
            for index, step in enumerate((1000, 2000, TOTAL_STEPS)):
                row = [str(step)]
                for results in all_results:
                    value = repr(results["eval_history"][index][key])
                    row += [value, value, value]
                writer.writerow(row)
        charts.append(path)
    return [runs_table, *charts]


def test_wandb_csv_exports_give_the_same_tables(runs_dir, all_results, tmp_path):
    exports = write_wandb_exports(tmp_path, all_results)
    local = load_runs(runs_dir)
    with pytest.warns(UserWarning, match="not in State 'finished'"):
        from_wandb = load_runs(exports)
    for options in ({}, {"compare_paper": True}, {"fmt": "latex"}):
        assert make_table(from_wandb, **options) == make_table(local, **options)
    assert set(from_wandb["metric"]) == {"re", "sm", "eval/episodic_return", "eval/smoothness"}  # no __MIN/__MAX
    with pytest.raises(PlotInputError, match="per-episode values"):  # run summaries hold no episodes
        make_table(from_wandb, std="episodes")
    for metric in ("eval/episodic_return", "eval/smoothness"):
        ours, theirs = curve_summary(local, metric), curve_summary(from_wandb, metric)
        assert theirs[["env", "method", "step"]].equals(ours[["env", "method", "step"]])
        assert theirs["mean"].to_numpy() == pytest.approx(ours["mean"].to_numpy(), rel=1e-6)
    # local logs listed first win: no run is counted twice
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both = load_runs([runs_dir, *exports])
    assert len(both[both["metric"] == "re"]) == len(all_results)
    assert set(both.loc[both["metric"] == "re", "source"]) == {str(runs_dir)}


def test_wandb_chart_export_of_grouped_runs_is_rejected(tmp_path):
    path = tmp_path / "grouped.csv"
    path.write_text('"global_step","exp_name: td3_pave_continuous - eval/episodic_return"\n"1000","5"\n')
    with pytest.raises(PlotInputError, match="cannot tell env/method/seed"):
        load_runs([path])


@pytest.mark.parametrize("step_column", ["Step", "_step"])
def test_a_chart_export_over_wandbs_own_step_is_refused_in_one_line(step_column, tmp_path):
    """W&B's Step counts log calls (4, 14, ...), not env steps: plotted as env steps it would mislead silently."""
    path = tmp_path / "chart.csv"
    path.write_text(f'"{step_column}","Pendulum-v1__td3_continuous__1 - eval/episodic_return"\n"4","5"\n"14","6"\n')
    with pytest.raises(PlotInputError) as refused:
        load_runs([path])
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and f"x-axis is W&B's '{step_column}'" in message
    assert "set the chart's x-axis to global_step" in message


def test_wandb_api_offline(monkeypatch, runs_dir, all_results):
    """The API path with a stand-in for wandb.Api (the real one needs the network)."""

    class FakeRun:
        def __init__(self, results, state="finished"):
            self.name, self.state = results["run_name"], state
            self.config = {"env_id": results["env_id"], "exp_name": results["exp_name"], "seed": results["seed"]}
            self.summary = {"eval/episodic_return": results["eval"]["return_mean"],
                            "eval/smoothness": results["eval"]["smoothness_mean"], "global_step": TOTAL_STEPS}
            self._history = results["eval_history"]

        def scan_history(self, keys):
            tag = keys[1]
            key = "return_mean" if tag == "eval/episodic_return" else "smoothness_mean"
            return [{"global_step": point["step"], tag: point[key]} for point in self._history]

    runs = [FakeRun(results) for results in all_results] + [FakeRun(all_results[0] | {"run_name": "x"}, state="running")]
    fake_wandb = types.SimpleNamespace(Api=lambda: types.SimpleNamespace(runs=lambda path, filters=None: runs))
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)
    from_api = load_wandb_api("entity/project")
    assert "x" not in set(from_api["run_name"])
    assert make_table(from_api) == make_table(load_runs(runs_dir))
    assert set(from_api["metric"]) == {"re", "sm", "eval/episodic_return", "eval/smoothness"}
    summary = summarize(from_api, ["re"])
    hopper_pave = summary[(summary["env"] == "Hopper-v5") & (summary["method"] == "pave")].iloc[0]
    assert hopper_pave["mean"] == pytest.approx(expected_stats("Hopper-v5", "pave", "re")["mean"], rel=1e-12)


# --------------------------------------------------------------------------------------------------- CLI


def test_env_keeps_only_those_rows_with_the_same_cells(runs_dir):
    """--env Hopper-v5: the Hopper rows of the suite's table, cell for cell, and nothing else."""
    full = markdown_cells(make_table(load_runs(runs_dir), suite="td3_main", compare_paper=True))
    only = markdown_cells(make_table(load_runs(runs_dir), suite="td3_main", compare_paper=True, envs=("Hopper-v5",)))
    assert list(only) == [("Hopper-v5", "re"), ("Hopper-v5", "sm")]
    assert only == {key: full[key] for key in only}
    stats = expected_stats("Hopper-v5", "pave", "sm")
    assert re.sub(r"</?u>|\*\*", "", only[("Hopper-v5", "sm")]["pave"]) == f"{stats['mean']:.3f} ({stats['std_seeds']:.3f})"
    with pytest.raises(PlotInputError, match="--env Walker2d-v5: not among the loaded runs envs"):
        make_table(load_runs(runs_dir), envs=("Walker2d-v5",))
    done = run_cli("tables.py", "--runs", str(runs_dir), "--suite", "td3_main", "--env", "Foo-v1")
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "error: --env Foo-v1: not among suite td3_main envs (LunarLanderContinuous-v3, Pendulum-v1, Reacher-v5, Ant-v5, "
        "Hopper-v5, Walker2d-v5)"]


def run_cli(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "plots" / script), *args], capture_output=True, text=True, cwd=REPO)


def test_tables_cli(runs_dir, tmp_path):
    out = tmp_path / "table.tex"
    done = run_cli("tables.py", "--runs", str(runs_dir), "--format", "latex", "--compare-paper", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "warning: Pendulum-v1: runs of 3,000 steps are compared with the paper's 100,000-step runs" in \
        done.stderr.splitlines()
    text = out.read_text()
    assert "\\textbf{" in text and "\\underline{" in text and "\\begin{tabular}" in text

    missing = run_cli("tables.py", "--runs", str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [f"error: no such file or directory: {tmp_path / 'nope'}"]


def test_curves_cli(runs_dir, tmp_path):
    done = run_cli("curves.py", "--runs", str(runs_dir), "--out", str(tmp_path / "curves"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "curves_return.pdf").is_file() and (tmp_path / "curves_smoothness.png").is_file()


@pytest.mark.parametrize("script, module", [("tables.py", "pandas"), ("curves.py", "pandas"),
                                            ("curves.py", "matplotlib"), ("hessian_surface.py", "matplotlib")])
def test_without_the_plot_extra_a_cli_names_it_in_one_line(script, module, tmp_path):
    fake = tmp_path / "missing" / module
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise ImportError('{module} is not installed')\n")
    done = subprocess.run([sys.executable, str(REPO / "plots" / script), "--help"], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(fake.parent)})
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {script} needs the plotting extra: pip install 'cleanrl_pave[plot]' ({module} is not installed)"]


def test_during_training_table_from_exported_geometry_against_the_paper(tmp_path):
    """Runs with geometry_during_training.json beside results.json (benchmark/reproduction/queue.py's export of the
    geometry/* scalars logged with --geometry-freq): the table has M_sup and NDef rate at the paper's steps, means
    across seeds, and the paper's during_training values beside them."""
    from plots.tables import main as tables

    steps = (100000, 200000, 300000, 400000, 500000)
    for script, m_sup in (("td3_continuous", 300.0), ("td3_pave_continuous", 100.0)):
        for seed, offset in ((1, 0.0), (2, 20.0)):
            run_dir = tmp_path / "runs" / f"LunarLanderContinuous-v3__{script}__{seed}"
            run_dir.mkdir(parents=True)
            evaluation = {"return_mean": 1.0, "smoothness_mean": 1.0, "episode_returns": [1.0],
                          "episode_smoothness": [1.0]}
            (run_dir / "results.json").write_text(json.dumps({
                "script": script, "exp_name": script, "env_id": "LunarLanderContinuous-v3", "seed": seed,
                "run_name": run_dir.name, "global_step": 500000, "eval": evaluation, "eval_history": []}))
            (run_dir / "geometry_during_training.json").write_text(json.dumps({
                "M_sup": {str(step): m_sup + offset + step / 1e5 for step in steps},
                "ndef_rate": {str(step): 0.25 * seed for step in steps}}))
    out = tmp_path / "table.md"
    tables(["--runs", str(tmp_path / "runs"), "--during-training", "--compare-paper", "--out", str(out)])
    rows = {tuple(cell.strip() for cell in line.split("|")[2:3]): [cell.strip() for cell in line.split("|")[3:-1]]
            for line in out.read_text().splitlines() if line.startswith("| LunarLander")}
    assert list(rows) == [(f"{key}@{step} {arrow}",) for step in (100000, 300000, 500000)
                          for key, arrow in (("M_sup", "↓"), ("ndef_rate", "↑"))]  # the paper's steps only
    # base: mean of 301 and 321 (std 10); the paper's 273; pave best (bold)
    assert rows[("M_sup@100000 ↓",)] == ["311.0 (10.0)", "273.0", "+38.0", "**111.0 (10.0)**", "101.0", "+10.0"]
    assert rows[("ndef_rate@500000 ↑",)][:3] == ["0.375 (0.125)", "0.332", "+0.043"]


@pytest.mark.parametrize("content, message", [
    ('"Wall time","Step","Value"\n"1.0","1000","5.0"\n', "is a TensorBoard scalar export"),
    ('"Name","env_id","exp_name","seed"\n"Pendulum-v1__td3_continuous__1","Pendulum-v1","td3_continuous","1"\n',
     "has no eval/episodic_return or eval/smoothness column: show those summary columns"),
    ('"global_step","Pendulum-v1__td3_continuous__1 - charts/episodic_return"\n"1000","5"\n',
     "holds charts/episodic_return, which no table or figure uses: export an eval/* or geometry/* chart"),
])
def test_foreign_or_incomplete_exports_say_what_is_missing_and_what_would_work(content, message, tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(content)
    with pytest.raises(PlotInputError, match=re.escape(message)) as refused:
        load_runs([path])
    assert len(str(refused.value).splitlines()) == 1


def test_a_folder_of_wandb_exports_is_read_as_the_exports(all_results, tmp_path):
    exports = write_wandb_exports(tmp_path, all_results)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_folder, from_files = load_runs([tmp_path]), load_runs(exports)
    assert from_folder.drop(columns="source").equals(from_files.drop(columns="source"))
