"""Which code, which library versions and which machine made a result (README: Reproducibility).

Not part of any algorithm. Every script records `segment(...)` when it starts or resumes: results.json and each
checkpoint hold the list of a run's segments, one per process that trained it, so a number can be traced to the
commits and machines that produced it. Resuming under other code or on another CPU or GPU type warns in one line.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from functools import lru_cache
from importlib import metadata
from typing import Optional

import torch

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
LIBRARIES = ("torch", "gymnasium", "mujoco", "numpy")


def git(directory: str, *args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", "-C", directory, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@lru_cache(maxsize=None)
def code_version(directory: str = PACKAGE_DIR) -> dict:
    """{"commit", "dirty", "package_version"}: the git commit of the checkout holding `directory` and whether its
    work tree differs from it (changed tracked files, or untracked files that git does not ignore), or None for
    both outside a git checkout (an installed package), where the package version says which release it is."""
    commit = git(directory, "rev-parse", "HEAD")
    status = git(directory, "status", "--porcelain") if commit else None
    try:
        version = metadata.version("cleanrl_pave")
    except metadata.PackageNotFoundError:
        version = None
    return {"commit": commit, "dirty": None if status is None else bool(status), "package_version": version}


@lru_cache(maxsize=None)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    """The CPU model, and the GPU's name when the run trains on one."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu": cpu_model(), "gpu": gpu, "platform": platform.platform()}


def library_versions() -> dict:
    versions = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def segment(start_step: int, device: torch.device) -> dict:
    """What one process of a run ran on: from which step, with which code, libraries, machine and threads."""
    return {"start_step": start_step, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "code": code_version(),
            "versions": library_versions(), "machine": machine(device), "threads": torch.get_num_threads()}


def differences(before: dict, now: dict) -> list[str]:
    """What differs between two segments that can change numbers: the code, the processor types, the thread count."""
    found = []
    if (before["code"]["commit"], before["code"]["dirty"], before["code"]["package_version"]) != \
            (now["code"]["commit"], now["code"]["dirty"], now["code"]["package_version"]):
        found.append(f"code {describe_code(before['code'])} -> {describe_code(now['code'])}")
    for kind in ("cpu", "gpu"):
        if before["machine"][kind] != now["machine"][kind]:
            found.append(f"{kind} {before['machine'][kind]} -> {now['machine'][kind]}")
    if before["threads"] != now["threads"]:
        found.append(f"threads {before['threads']} -> {now['threads']}")
    return found


def describe_code(code: dict) -> str:
    if code["commit"] is None:
        return f"cleanrl_pave {code['package_version']}"
    return code["commit"][:12] + (" with uncommitted changes" if code["dirty"] else "")


def resumed_segments(previous: list[dict], current: dict) -> list[dict]:
    """The segments of a resumed run, the current one last; warns in one line when its code or machine differs from
    the segment before it (recorded in the segment as "differs")."""
    changed = differences(previous[-1], current) if previous else []
    if changed:
        print(f"warning: resuming under other code or hardware ({'; '.join(changed)}): from step "
              f"{current['start_step']} this run's numbers are not those of one code version and machine type",
              file=sys.stderr, flush=True)
        current = {**current, "differs": changed}
    return [*previous, current]
