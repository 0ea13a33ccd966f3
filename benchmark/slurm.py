"""SLURM array jobs for clusters without Ray: one array index per run.

``run.py --backend slurm`` writes ``<out>/slurm/<suite>.commands`` (line i = run i, a self-contained shell
command that skips a run whose results.json exists and appends to the run's log) and
``<out>/slurm/<suite>.sbatch`` (array 0..N-1; task i executes line i). Resubmitting the same job after a
partial failure re-runs only the runs without results; interrupted ones resume from their checkpoints.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmark.commands import LaunchSettings
from benchmark.suite_loader import Run


@dataclass(frozen=True)
class SlurmOptions:
    time: str = "48:00:00"
    mem: str = "8G"
    partition: str | None = None
    max_parallel: int | None = None  # the array's %N throttle
    setup: tuple[str, ...] = ()  # shell lines run before the command, e.g. "source .venv/bin/activate"


def commands_file(runs: list[Run], settings: LaunchSettings) -> str:
    return "".join(settings.shell_line(run, sys.executable, skip_done=True, log=True) + "\n" for run in runs)


def sbatch_script(commands_path: Path, count: int, settings: LaunchSettings, options: SlurmOptions) -> str:
    array = f"0-{count - 1}" + (f"%{options.max_parallel}" if options.max_parallel else "")
    directives = [f"--job-name=pave-{settings.suite}", f"--array={array}",
                  f"--cpus-per-task={settings.threads}", f"--mem={options.mem}", f"--time={options.time}",
                  f"--output={settings.out / 'logs' / 'slurm-%A_%a.out'}"]
    if options.partition:
        directives.append(f"--partition={options.partition}")
    lines = ["#!/bin/bash", *(f"#SBATCH {directive}" for directive in directives),
             f"# suite {settings.suite}: {count} runs; array task i runs line i+1 of the commands file",
             "set -euo pipefail", *options.setup,
             f"mkdir -p {shlex.quote(str(settings.out / 'logs'))}",
             f'line=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(commands_path))})',
             'exec bash -c "$line"']
    return "\n".join(lines) + "\n"


def write_job(runs: list[Run], settings: LaunchSettings, options: SlurmOptions) -> tuple[Path, Path]:
    """Write the commands file and the sbatch script; returns their paths."""
    directory = settings.out / "slurm"
    directory.mkdir(parents=True, exist_ok=True)
    commands_path = directory / f"{settings.suite}.commands"
    sbatch_path = directory / f"{settings.suite}.sbatch"
    commands_path.write_text(commands_file(runs, settings))
    sbatch_path.write_text(sbatch_script(commands_path, len(runs), settings, options))
    return sbatch_path, commands_path
