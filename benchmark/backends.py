"""Where runs execute: local subprocesses, or Ray tasks that each run the same subprocess.

A backend starts runs (``submit``), reports the ones that ended (``poll``), and kills whatever is still
running (``stop``). Retries, skipping and bookkeeping live in the runner, so both backends behave alike.
With GPUs, each run sees one GPU as cuda:0 (CUDA_VISIBLE_DEVICES), and several runs can share one: a run of these
scripts uses a small part of a large GPU (benchmark/measurements/gpu.md).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
KILL_GRACE_S = 60.0  # a run saves a checkpoint at the end of its current step on SIGTERM; this bounds the wait


class BackendError(RuntimeError):
    """The backend cannot run anything (e.g. Ray did not start); the message is one line."""


@dataclass(frozen=True)
class Job:
    """What a backend needs to start one attempt of a run."""

    name: str
    script_args: list[str]  # script path and flags; the interpreter is the executing machine's own
    cwd: str
    environment: dict[str, str]
    log_path: str
    log_header: str


@dataclass(frozen=True)
class Ended:
    name: str
    returncode: int | None  # None: the run's process could not report (e.g. its Ray worker died)
    error: str = ""


def _die_with_parent(parent_pid: int):
    """preexec_fn: the child gets SIGTERM when its parent dies, so a SIGKILLed runner leaves no orphans
    that would train on next to the re-run's copy of the same run (Linux only)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, before fork, not in the child

    def set_death_signal():
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return set_death_signal


def start_process(job: Job) -> subprocess.Popen:
    """Start the run's script with this machine's interpreter, appending its output to the run's log (after a header
    naming the GPU it was given, if any). The run gets its own session, so a Ctrl-C in the runner's terminal reaches
    the runner alone, which then sends each run one SIGTERM (a second signal would make a run stop at once, without
    its checkpoint)."""
    os.makedirs(os.path.dirname(job.log_path), exist_ok=True)
    environment = {**os.environ, **job.environment}
    with open(job.log_path, "a") as log:
        log.write(job.log_header)
        if "CUDA_VISIBLE_DEVICES" in environment:  # set by the runner's --gpus, or by Ray for a task with GPUs
            log.write(f"CUDA_VISIBLE_DEVICES={environment['CUDA_VISIBLE_DEVICES']}\n")
        log.flush()
        return subprocess.Popen(
            [sys.executable, *job.script_args], cwd=job.cwd, env=environment,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()) if sys.platform.startswith("linux") else None)


def run_to_completion(job: Job) -> int:
    """Body of a Ray task: the same subprocess as a local run, waited for."""
    return start_process(job).wait()


class GpuSlots:
    """Which GPU each local run gets: the least busy of `gpus` (the first of them on a tie), at most `runs_per_gpu`
    runs on each at once."""

    def __init__(self, gpus: list[str], runs_per_gpu: int):
        self.runs_on = {gpu: 0 for gpu in gpus}
        self.runs_per_gpu = runs_per_gpu
        self.gpu_of: dict[str, str] = {}  # run name -> its GPU

    @property
    def capacity(self) -> int:
        return len(self.runs_on) * self.runs_per_gpu

    def take(self, name: str) -> str:
        gpu = min(self.runs_on, key=self.runs_on.get)
        if self.runs_on[gpu] >= self.runs_per_gpu:
            raise BackendError(f"no GPU slot left for {name}: {self.capacity} runs are on the GPUs already")
        self.runs_on[gpu] += 1
        self.gpu_of[name] = gpu
        return gpu

    def release(self, name: str) -> None:
        self.runs_on[self.gpu_of.pop(name)] -= 1


class LocalBackend:
    """Child processes of the runner; at most ``workers`` at a time is the runner's job. With ``gpu_slots``, each run
    is started with CUDA_VISIBLE_DEVICES set to the GPU it was given."""

    def __init__(self, gpu_slots: GpuSlots | None = None):
        self.processes: dict[str, subprocess.Popen] = {}
        self.gpu_slots = gpu_slots

    def submit(self, job: Job) -> None:
        if self.gpu_slots:
            job = replace(job, environment={**job.environment, "CUDA_VISIBLE_DEVICES": self.gpu_slots.take(job.name)})
        self.processes[job.name] = start_process(job)

    def poll(self, timeout: float) -> list[Ended]:
        deadline = time.monotonic() + timeout
        while True:
            ended = [Ended(name, process.returncode) for name, process in self.processes.items()
                     if process.poll() is not None]
            if ended or time.monotonic() >= deadline:
                for item in ended:
                    del self.processes[item.name]
                    if self.gpu_slots:
                        self.gpu_slots.release(item.name)
                return ended
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM every child (each saves a checkpoint and exits), SIGKILL those still alive after a grace period."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + KILL_GRACE_S
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.gpu_slots:
            for name in self.processes:
                self.gpu_slots.release(name)
        self.processes.clear()

    def close(self) -> None:
        self.stop()


class RayBackend:
    """One Ray task (num_cpus=1) per attempt, on a running cluster (``address``) or a local instance. With
    ``runs_per_gpu``, each task also asks for 1/runs_per_gpu of a GPU, and Ray sets its CUDA_VISIBLE_DEVICES; a local
    instance is given the GPUs ``gpus`` (ids as CUDA numbers them)."""

    def __init__(self, address: str | None, num_cpus: int | None, gpus: list[str] | None = None,
                 runs_per_gpu: int | None = None):
        import ray  # optional dependency: only this backend needs it

        self.ray = ray
        # Ship this module by value: Ray workers need not have the repository on their import path.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                if gpus:  # Ray hands out the visible ids themselves: a task on the second of "2,3" sees "3"
                    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
                ray.init(num_cpus=num_cpus, num_gpus=len(gpus) if gpus else None, include_dashboard=False,
                         log_to_driver=False)
        except Exception as error:  # Ray raises plain Exceptions (e.g. a node that timed out starting)
            where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
            raise BackendError(f"could not {where}: {str(error).splitlines()[0]}") from None
        # max_retries=0: a retry is the runner's decision, logged and counted like a local one.
        gpu_share = 1.0 / runs_per_gpu if runs_per_gpu else 0
        self.task = ray.remote(num_cpus=1, num_gpus=gpu_share, max_retries=0)(run_to_completion)
        self.refs: dict = {}

    def submit(self, job: Job) -> None:
        self.refs[self.task.remote(job)] = job.name

    def poll(self, timeout: float) -> list[Ended]:
        if not self.refs:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout)
        ended = []
        for ref in ready:
            name = self.refs.pop(ref)
            try:
                ended.append(Ended(name, self.ray.get(ref)))
            except Exception as error:  # a dead worker or node: the run failed, the runner goes on
                ended.append(Ended(name, None, f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"))
        return ended

    def stop(self) -> None:
        """Force-cancelling kills the task's worker; its child run then dies with it (death signal)."""
        for ref in self.refs:
            self.ray.cancel(ref, force=True)
        self.refs.clear()

    def close(self) -> None:
        self.stop()
        self.ray.shutdown()
