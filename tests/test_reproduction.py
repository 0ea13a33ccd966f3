"""The committed reproduction data (benchmark/reproduction/): every run is a full-length paper run with the script's
paper defaults, and the committed runs still load and render through plots/tables.py, so the page cannot rot."""

import importlib
import json
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PENDULUM = REPO / "benchmark" / "reproduction" / "pendulum"
PAPER_SEEDS = [178132, 410580, 922852, 787576, 660993]
RESULTS = sorted(PENDULUM.glob("*/results.json"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def test_there_are_committed_runs():
    assert RESULTS, f"no results.json under {PENDULUM}"


@pytest.mark.parametrize("path", RESULTS, ids=[path.parent.name for path in RESULTS])
def test_each_run_is_a_paper_run_with_the_scripts_defaults(path):
    results = json.loads(path.read_text())
    config = results["config"]
    assert results["env_id"] == "Pendulum-v1" and path.parent.name == results["run_name"]
    assert results["global_step"] == config["total_timesteps"] == 100_000  # the paper's steps, not shortened
    assert config["seed"] in PAPER_SEEDS and config["eval_episodes"] == 10
    assert len(results["eval"]["episode_returns"]) == 10
    module = importlib.import_module(f"cleanrl_pave.{results['script']}")
    defaults = module.Args(env_id="Pendulum-v1", seed=config["seed"])
    for resolve in [module.resolve_args] + [getattr(module, name) for name in dir(module)
                                            if name.startswith("resolve_") and name != "resolve_args"]:
        defaults = resolve(defaults)
    # nothing tuned: every setting that shapes training is the script's paper default for Pendulum
    bookkeeping = {"run_name", "resume", "checkpoint_freq", "save_model", "threads", "progress_interval", "cuda",
                   "cudagraphs", "checkpoint_minutes", "track", "wandb_project_name", "wandb_entity", "wandb_group", "wandb_tags"}
    expected = json.loads(json.dumps({key: value for key, value in vars(defaults).items() if key not in bookkeeping}))
    assert {key: config[key] for key in expected} == expected


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
