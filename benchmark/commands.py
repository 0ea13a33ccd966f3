"""How a run becomes a command line, and where its files go (relative to the output directory)."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.suite_loader import SCRIPTS_DIR, Run, SuiteError, flag_argv


@dataclass(frozen=True)
class LaunchSettings:
    """What the runner adds to every run's own flags."""

    suite: str
    out: Path
    threads: int = 1
    checkpoint_fraction: float = 0.1
    checkpoint_minutes: float = 10.0
    scripts_dir: Path = SCRIPTS_DIR
    track: bool = False
    wandb_project: str = "cleanrl_pave"
    wandb_entity: str | None = None
    wandb_tags: list[str] = field(default_factory=list)

    def results_path(self, run: Run) -> Path:
        return self.out / "runs" / run.name / "results.json"

    def checkpoint_path(self, run: Run) -> Path:
        return self.out / "runs" / run.name / "checkpoint.pt"

    def log_path(self, run: Run) -> Path:
        return self.out / "logs" / f"{run.name}.log"

    def environment(self) -> dict[str, str]:
        """Environment overrides: one BLAS/OpenMP thread per process, so N workers use N cores, live logs, and the
        checkout holding the scripts first on PYTHONPATH, so that a script imports the helper modules of its own
        checkout (a worktree of a fixed commit, say) rather than those of the installed one."""
        threads = str(self.threads)
        python_path = os.pathsep.join(filter(None, [str(self.scripts_dir.parent), os.environ.get("PYTHONPATH")]))
        return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": python_path}

    def script_args(self, run: Run) -> list[str]:
        """The run's command line without the interpreter: script path and flags."""
        args = [str(self.scripts_dir / f"{run.script}.py"), "--env-id", run.env_id, "--seed", str(run.seed),
                "--run-name", run.name, "--resume", "--threads", str(self.threads)]
        if "checkpoint-freq" not in run.flags:
            args += ["--checkpoint-freq", str(self.checkpoint_freq(run))]
        if "checkpoint-minutes" not in run.flags:  # so that a SIGKILL loses minutes, not a tenth of a run
            args += ["--checkpoint-minutes", f"{self.checkpoint_minutes:g}"]
        for name, value in run.flags.items():
            args += flag_argv(name, value)
        if self.track:
            tags = dict.fromkeys([self.suite, *self.wandb_tags, *([run.tag] if run.tag else [])])  # ordered, unique
            cell = run.name.rsplit("__", 1)[0]  # the run name without its seed: a W&B group holds a cell's seeds
            args += ["--track", "--wandb-project-name", self.wandb_project, "--wandb-group", cell,
                     "--wandb-tags", *tags]
            if self.wandb_entity:
                args += ["--wandb-entity", self.wandb_entity]
        return args

    def checkpoint_freq(self, run: Run) -> int:
        """Checkpoint every `checkpoint_fraction` of the run, so a killed run loses at most that much."""
        if run.total_timesteps is None:
            raise SuiteError(f"run {run.name} has no total-timesteps flag to size --checkpoint-freq from "
                             "(set total-timesteps or checkpoint-freq in the suite, or with --set)")
        return max(1, round(run.total_timesteps * self.checkpoint_fraction))

    def shell_line(self, run: Run, python: str, skip_done: bool = False, log: bool = False) -> str:
        """A self-contained shell command for the run (cwd, environment, optional log and done-check)."""
        variables = " ".join(f"{name}={shlex.quote(value)}" for name, value in self.environment().items())
        command = f"{variables} {shlex.join([python, *self.script_args(run)])}"
        if log:
            command += f" >> {shlex.quote(str(self.log_path(run)))} 2>&1"
        if skip_done:
            command = f"{{ test -f {shlex.quote(str(self.results_path(run)))} || {command}; }}"
        return f"cd {shlex.quote(str(self.out))} && {command}"
