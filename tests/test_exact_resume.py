"""Exact resume (README: Reproducibility): a run killed any number of times, at any moment, and resumed ends with
exactly the numbers of its uninterrupted run: every eval_history entry, the final evaluation and the final network
parameters, bit for bit. Real processes and real signals, on envs whose episodes end at different lengths, so that
checkpoints fall mid-episode and the training env is rebuilt by replaying its episode."""

import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import SCRIPTS, ForkedRun, Zygote, check_outputs, scalars

REPO = pathlib.Path(__file__).resolve().parents[1]
TOTAL = 600
SHORT = ["--total-timesteps", str(TOTAL), "--learning-starts", "100", "--hidden-sizes", "32", "32", "--eval-freq",
         "200", "--eval-episodes", "1", "--save-model", "--progress-interval", "0"]


def command(script: str, run_name: str, env_id: str, *flags: str) -> list[str]:
    """`python SCRIPT ...` without the `python`: what the zygote runs (a resume command adds sys.executable)."""
    eager = ["--no-pave-compile"] if "pave" in script and "--pave-compile" not in flags else []
    return [str(REPO / "cleanrl_pave" / f"{script}.py"), "--env-id", env_id, "--run-name", run_name, *SHORT, *eager,
            *flags]


@pytest.fixture(scope="module")
def zygote():
    """Runs start as processes forked from one interpreter that has imported torch and the scripts' helpers
    (tests/helpers.py: Zygote): real processes, killed and signalled for real, without 5 s of imports each."""
    forker = Zygote(REPO)
    yield forker
    forker.close()


def start(zygote: Zygote, argv: list[str], cwd: pathlib.Path, name: str) -> ForkedRun:
    return zygote.start(argv, cwd, cwd / f"{name}.log")


def wait_for(condition, process: ForkedRun, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def checkpoint_step(path: pathlib.Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def final_numbers(run_dir: pathlib.Path, script: str) -> tuple[dict, dict]:
    results = json.loads((run_dir / "results.json").read_text())
    model = torch.load(run_dir / f"{script}.cleanrl_model", weights_only=True)
    return results, {part: model[part] for part in ("actor", "qf")}


def assert_identical(reference: tuple, resumed: tuple) -> None:
    (expected, expected_model), (got, got_model) = reference, resumed
    assert got["eval_history"] == expected["eval_history"]
    assert got["eval"] == expected["eval"]
    for part, state in expected_model.items():
        for name, tensor in state.items():
            assert torch.equal(got_model[part][name], tensor), f"{part}.{name} differs"


def kill_after_checkpoints(zygote: Zygote, argv: list[str], cwd: pathlib.Path, run_dir: pathlib.Path,
                           kills: int) -> list[int]:
    """Start the run, SIGKILL it as soon as it has written a new checkpoint, `kills` times, resuming it each time;
    the last resume runs to the end. Returns the steps it resumed from."""
    checkpoint, resumed_from = run_dir / "checkpoint.pt", []
    for attempt in range(kills + 1):
        seen = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
        process = start(zygote, argv + (["--resume"] if attempt else []), cwd, "chain")
        if attempt == kills:
            assert process.wait(timeout=300) == 0, (cwd / "chain.log").read_text()[-3000:]
            break
        wait_for(lambda: checkpoint.exists() and checkpoint.stat().st_mtime_ns != seen, process, "a new checkpoint")
        process.kill()  # SIGKILL: nothing of the run's own runs after this
        process.wait()
        resumed_from.append(checkpoint_step(checkpoint))
    return resumed_from


CASES = [(script, "LunarLanderContinuous-v3") for script in SCRIPTS] + [("td3_continuous", "Hopper-v5")]  # MuJoCo too


@pytest.mark.parametrize("script, env_id", CASES, ids=[f"{script}-{env.split('-')[0]}" for script, env in CASES])
def test_a_run_killed_twice_ends_with_the_numbers_of_the_uninterrupted_run(script, env_id, tmp_path, zygote):
    reference = start(zygote, command(script, "reference", env_id), tmp_path, "reference")  # beside the chain
    resumed_from = kill_after_checkpoints(zygote, command(script, "killed", env_id, "--checkpoint-freq", "150"),
                                          tmp_path, tmp_path / "runs/killed", kills=2)
    assert reference.wait(timeout=300) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    check_outputs(script, tmp_path / "runs/reference", TOTAL, eval_freq=200)  # the script's smoke test
    assert resumed_from == [150, 300]  # each kill came before the next checkpoint: the resume redid the steps since
    assert_identical(final_numbers(tmp_path / "runs/reference", script),
                     final_numbers(tmp_path / "runs/killed", script))
    results = json.loads((tmp_path / "runs/killed/results.json").read_text())
    assert [segment["start_step"] for segment in results["segments"]] == [0, 150, 300]
    logged = scalars(tmp_path / "runs/killed")  # events a killed process logged after its checkpoint are purged
    assert [event.step for event in logged["eval/episodic_return"]] == [200, 400, 600]
    steps = [event.step for event in logged["losses/qf1_loss"]]
    assert steps == sorted(set(steps)) and steps[-1] == TOTAL, "the resumed curve continues, without repeats"
    assert "resuming at step 300" in (tmp_path / "chain.log").read_text()


def test_a_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint_and_the_resume_exact(tmp_path, zygote):
    script, env_id = "td3_continuous", "LunarLanderContinuous-v3"
    reference = start(zygote, command(script, "reference", env_id), tmp_path, "reference")
    argv = command(script, "killed", env_id, "--checkpoint-freq", "50")
    run_dir = tmp_path / "runs/killed"
    checkpoint, partial = run_dir / "checkpoint.pt", run_dir / ".checkpoint.pt.partial"
    process = start(zygote, argv, tmp_path, "chain")
    wait_for(checkpoint.exists, process, "a first checkpoint")
    deadline = time.monotonic() + 120
    while not partial.exists():  # no sleep: a small checkpoint is written in milliseconds
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint write was caught midway"
    process.kill()
    process.wait()
    assert partial.exists(), "killed midway through writing the next checkpoint"
    previous = checkpoint_step(checkpoint)  # the complete previous checkpoint, still loadable
    assert previous % 50 == 0 and previous < TOTAL
    assert start(zygote, argv + ["--resume"], tmp_path, "chain").wait(timeout=300) == 0
    assert reference.wait(timeout=300) == 0
    assert_identical(final_numbers(tmp_path / "runs/reference", script), final_numbers(run_dir, script))
    assert not partial.exists()  # the next write replaced it


# PAVE with its loss compiled, as by default: the reference, the stopped and the resumed process each compile it, and
# the three give the same numbers (same seed, same machine, the default compiled path)
STOPS = [("td3_continuous", signal.SIGINT, []), ("sac_continuous", signal.SIGTERM, []),
         ("td3_pave_continuous", signal.SIGINT, ["--pave-compile"]),
         ("sac_pave_continuous", signal.SIGTERM, ["--pave-compile"])]


@pytest.mark.parametrize("script, signum, flags", STOPS, ids=[f"{script}-{signum.name}" for script, signum, _ in STOPS])
def test_sigint_and_sigterm_save_a_checkpoint_and_exit_with_one_line(script, signum, flags, tmp_path, zygote):
    """What Ctrl-C (to the whole process group, as a terminal sends it), SLURM and Ray do to a run with the default
    --checkpoint-freq 0: it saves an exact checkpoint, says in one line where it is and how to resume, and exits
    128 + the signal; the printed command resumes it exactly."""
    env_id = "LunarLanderContinuous-v3"
    reference = start(zygote, command(script, "reference", env_id, *flags), tmp_path, "reference")
    log, error_log = tmp_path / "stopped.log", tmp_path / "stopped.stderr"
    process = zygote.start(command(script, "stopped", env_id, *flags), tmp_path, log, error_log, new_session=True)
    wait_for(lambda: log.exists() and "step 200/" in log.read_text(), process,
             "the first evaluation, past learning_starts")
    os.killpg(process.pid, signum)
    process.wait(timeout=300)
    stderr = error_log.read_text()
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in log.read_text() + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{signum.name}: stopped at step ")
    assert "checkpoint saved to runs/stopped/checkpoint.pt" in lines[0]
    stopped_at = int(lines[0].split("stopped at step ")[1].split(";")[0])
    run_dir = tmp_path / "runs/stopped"
    assert checkpoint_step(run_dir / "checkpoint.pt") == stopped_at and 200 <= stopped_at < TOTAL
    resume = shlex.split(lines[0].split("resume with: ")[1])
    assert resume[0] == "python" and resume[-3:] == ["--run-name", "stopped", "--resume"]
    resumed = subprocess.run([sys.executable, *resume[1:]], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait(timeout=300) == 0
    if "--pave-compile" in flags:  # the default path: compiled, not an eager fallback, in all three processes
        for output in ((tmp_path / "reference.log").read_text(), log.read_text(), resumed.stdout):
            assert "compiled the PAVE loss in" in output and "warning" not in output
        assert "warning" not in stderr + resumed.stderr
    assert_identical(final_numbers(tmp_path / "runs/reference", script), final_numbers(run_dir, script))


def test_a_second_signal_stops_at_once_with_one_line(tmp_path):
    program = ("import os, signal, time\n"
               "from cleanrl_pave.checkpointing import StopSignals\n"
               "stop = StopSignals('runs/x/checkpoint.pt')\n"
               "os.kill(os.getpid(), signal.SIGINT)\n"
               "time.sleep(0.2)\n"
               "assert stop.received == signal.SIGINT\n"
               "os.kill(os.getpid(), signal.SIGINT)\n"
               "time.sleep(5)\n"
               "print('not stopped')\n")
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGINT and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "SIGINT again: stopped at once, without a new checkpoint (runs/x/checkpoint.pt holds the last one, if any)"]


def test_writing_a_checkpoint_makes_no_copy_of_the_replay_buffer(tmp_path):
    """benchmark/measurements/checkpoint_memory.py on a 109 MiB buffer: the peak resident set while the checkpoint is
    written stays within 10% of the buffer's size above the resident set before (a copy of the rows would add 100%)."""
    report_path = tmp_path / "memory.json"
    tool = REPO / "benchmark" / "measurements" / "checkpoint_memory.py"
    done = subprocess.run([sys.executable, str(tool), "--capacity", "40000", "--dir", str(tmp_path),
                           "--json", str(report_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report["file_mib"] == pytest.approx(report["buffer_mib"], rel=0.01)
    added = report["write"]["peak_mib"] - report["write"]["rss_before_mib"]
    assert added < 0.1 * report["buffer_mib"], report
