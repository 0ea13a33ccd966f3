"""The committed reproduction data (benchmark/reproduction/): every run is a full-length paper run with the script's
paper defaults, the committed runs still load and render through plots/tables.py, and each page's status line counts
its committed runs, so the pages cannot rot."""

import importlib
import json
import pathlib
import re
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = REPO / "benchmark" / "reproduction"
PENDULUM = PAGES / "pendulum"
DATA = {"pendulum": ("Pendulum-v1", 100_000), "lunarlander": ("LunarLanderContinuous-v3", 500_000)}
# the Pendulum runs that were resumed before resume was exact, rerun from scratch in one process each at the campaign's
# commit; their results replaced the resumed runs' (the Pendulum page: Reruns)
PENDULUM_RERUNS = [f"Pendulum-v1__{script}__{seed}" for script, seed in [
    ("td3_continuous", 178132), ("td3_continuous", 410580), ("td3_continuous", 922852),
    ("td3_grad_continuous", 410580), ("td3_grad_continuous", 922852), ("td3_pave_continuous", 410580)]]
PAPER_SEEDS = [178132, 410580, 922852, 787576, 660993]
RESULTS = sorted(PENDULUM.glob("*/results.json"))
ALL_RESULTS = sorted(path for folder in DATA for path in (PAGES / folder).glob("*/results.json"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def test_there_are_committed_runs():
    assert RESULTS, f"no results.json under {PENDULUM}"


@pytest.mark.parametrize("path", ALL_RESULTS, ids=[f"{path.parent.parent.name}/{path.parent.name}"
                                                  for path in ALL_RESULTS])
def test_each_run_is_a_paper_run_with_the_scripts_defaults(path):
    env_id, steps = DATA[path.parent.parent.name]
    results = json.loads(path.read_text())
    config = results["config"]
    assert results["env_id"] == env_id and path.parent.name == results["run_name"]
    assert results["global_step"] == config["total_timesteps"] == steps  # the paper's steps, not shortened
    assert config["seed"] in PAPER_SEEDS and config["eval_episodes"] == 10
    assert len(results["eval"]["episode_returns"]) == 10
    module = importlib.import_module(f"cleanrl_pave.{results['script']}")
    defaults = module.Args(env_id=env_id, seed=config["seed"])
    for resolve in [module.resolve_args] + [getattr(module, name) for name in dir(module)
                                            if name.startswith("resolve_") and name != "resolve_args"]:
        defaults = resolve(defaults)
    # nothing tuned: every setting that shapes training is the script's paper default for the env (geometry logged
    # during training reads the critic and changes nothing)
    bookkeeping = {"run_name", "resume", "checkpoint_freq", "save_model", "threads", "progress_interval", "cuda",
                   "cudagraphs", "checkpoint_minutes", "geometry_freq", "track", "wandb_project_name",
                   "wandb_entity", "wandb_group", "wandb_tags"}
    expected = json.loads(json.dumps({key: value for key, value in vars(defaults).items() if key not in bookkeeping}))
    assert {key: config[key] for key in expected} == expected
    if path.parent.parent.name != "pendulum" or path.parent.name in PENDULUM_RERUNS:
        # runs made since exact resume: one commit, and provenance recorded
        codes = {(segment["code"]["commit"], segment["code"]["dirty"]) for segment in results["segments"]}
        assert len(codes) == 1 and not next(iter(codes))[1], codes


def test_each_pages_status_line_counts_its_committed_runs():
    page = (PAGES / "lunarlander.md").read_text()
    finished, planned = map(int, re.search(r"\*\*Status: (\d+) of (\d+) planned runs finished", page).groups())
    assert finished == len(list((PAGES / "lunarlander").glob("*/results.json"))) and planned == 18
    for name in (path.parent.name for path in (PAGES / "lunarlander").glob("*/results.json")):
        assert name in page, f"{name} is committed but not on the page"


def test_the_lunarlander_pages_table_of_finished_runs_is_the_committed_data():
    """The page's table of finished runs is exactly what plots/tables.py --per-run renders from the committed
    results.json and geometry files, row for row, so no number on it can drift from its run."""
    from plots.tables import per_run_table

    table = per_run_table([str(PAGES / "lunarlander")])
    assert table in (PAGES / "lunarlander.md").read_text(), table
    first_row = table.splitlines()[2].split(" | ")
    results = json.loads(sorted((PAGES / "lunarlander").glob("*/results.json"),
                                key=lambda path: path.parent.name)[0].read_text())
    assert first_row[1] == f"{results['eval']['return_mean']:.1f} ({results['eval']['return_std']:.1f})"
    assert first_row[-1].startswith(results["segments"][0]["code"]["commit"][:7])


def test_the_lunarlander_pages_tables_so_far_are_their_commands_output(tmp_path, monkeypatch):
    """Every `python plots/tables.py ...` command of the page's "Tables so far" section, run here on the committed
    data, prints text that the page holds verbatim (benchmark/reproduction/refresh_tables.py writes it)."""
    import glob
    import shlex

    from plots import tables

    page = (PAGES / "lunarlander.md").read_text()
    section = page[page.index("## Tables so far"):page.index("## Finished runs")]
    commands = [line for line in section.splitlines() if line.startswith("python plots/tables.py ")]
    assert len(commands) == 5 and section.count("### ") == 3
    monkeypatch.chdir(REPO)
    for number, command in enumerate(commands):
        argv = [path for word in shlex.split(command)[2:] for path in (sorted(glob.glob(word)) if "*" in word else [word])]
        out = tmp_path / f"{number}.md"
        tables.main([*argv, "--out", str(out)])
        assert out.read_text().strip() in section, command


def test_the_committed_runs_render_as_the_paper_tables(tmp_path):
    from plots import tables

    out = tmp_path / "table.md"
    scripts = {json.loads(path.read_text())["script"] for path in RESULTS}
    for backbone in sorted({script.split("_")[0] for script in scripts}):
        tables.main(["--runs", str(PENDULUM), "--suite", f"{backbone}_main", "--compare-paper", "--out", str(out)])
        lines = out.read_text().splitlines()
        pendulum_rows = [line for line in lines if line.startswith(("| Pendulum-v1 | re ", "| Pendulum-v1 | sm "))]
        assert len(pendulum_rows) == 2  # re and sm
        geometry = [path for path in PENDULUM.glob(f"*__{backbone}_*/geometry.json")]
        if geometry:  # the critic-geometry JSONs of the final models render as the geometry table
            m_sup = next(line for line in lines if line.startswith("| Pendulum-v1 | M_sup "))
            assert sum(cell.strip() not in ("", "–") for cell in m_sup.split("|")[3::3]) >= 1
        if f"{backbone}_continuous" in scripts:  # the first method column (base: ours, paper, difference) is filled
            assert all(row.split("|")[3].strip() not in ("", "–") for row in pendulum_rows)


@pytest.mark.parametrize("name", PENDULUM_RERUNS)
def test_each_pendulum_rerun_ran_in_one_process_from_step_0(name):
    """What the Pendulum page says of the reruns: one uninterrupted process each, so each is exactly its seed's run."""
    results = json.loads((PENDULUM / name / "results.json").read_text())
    assert [segment["start_step"] for segment in results["segments"]] == [0]
    assert (PENDULUM / name / "geometry.json").exists()


def test_the_runs_made_since_exact_resume_render_as_the_paper_tables(tmp_path):
    from plots import tables

    folder = "lunarlander"
    runs = sorted((PAGES / folder).glob("*/results.json"))
    env_id, out = DATA[folder][0], tmp_path / "table.md"
    for backbone in sorted({json.loads(path.read_text())["script"].split("_")[0] for path in runs}):
        tables.main(["--runs", str(PAGES / folder), "--suite", f"{backbone}_main", "--compare-paper", "--provenance",
                     "--out", str(out)])
        text = out.read_text()
        rows = [line for line in text.splitlines() if line.startswith((f"| {env_id} | re ", f"| {env_id} | sm "))]
        assert len(rows) == 2
        assert "code: " in text and "not recorded" not in text
    if list((PAGES / folder).glob("*/geometry_during_training.json")):
        tables.main(["--runs", str(PAGES / folder), "--during-training", "--compare-paper", "--out", str(out)])
        assert any(line.startswith(f"| {env_id} | M_sup@") for line in out.read_text().splitlines())
