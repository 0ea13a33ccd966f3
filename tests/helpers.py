"""Shared by the tests that train scripts."""

import os


def exit_abruptly(*args) -> None:
    """A pool task whose worker process dies without a Python exception (as a crashed worker would)."""
    os._exit(3)


def eager(module) -> dict:
    """Args overrides that run a script's PAVE loss eager: compiling it costs 20-30 s per script and process, so only
    the tests of compilation itself (tests/test_pave.py) compile."""
    return {"pave_compile": False} if "pave_compile" in module.Args.__dataclass_fields__ else {}


def train_tiny_runs(root, scripts, **overrides) -> dict:
    """Tiny Pendulum runs (300 steps, past learning_starts = 100, PAVE eager) of `scripts` in `root`, each run named
    after its script and saving its model and a checkpoint at step 200: {script: run dir}."""
    import importlib
    import os

    previous_dir = os.getcwd()
    os.chdir(root)
    try:
        for script in scripts:
            module = importlib.import_module(f"cleanrl_pave.{script}")
            settings = dict(env_id="Pendulum-v1", total_timesteps=300, learning_starts=100, hidden_sizes=(32, 32),
                            eval_freq=0, eval_episodes=1, checkpoint_freq=200, save_model=True, run_name=script,
                            progress_interval=0, **eager(module))
            module.main(module.Args(**{**settings, **overrides}))
    finally:
        os.chdir(previous_dir)
    return {script: root / "runs" / script for script in scripts}
