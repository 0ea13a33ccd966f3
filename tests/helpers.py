"""Helpers shared by several test modules: the script list, tiny training runs, reading a run's outputs, method blocks."""

import importlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "cleanrl_pave"
SCRIPTS = sorted(path.stem for path in PACKAGE.glob("*_continuous.py"))
LOGGED = re.compile(r'add_scalar\(\s*f?"(losses/[A-Za-z0-9_]+)"')
# the losses an update function returns in its `logged` dict, which the training loop logs as losses/<name>
RETURNED = re.compile(r'logged = \{(.*?)\}|logged\.update\((.*?)\)$', re.DOTALL | re.MULTILINE)
BASE_SCALARS = {"charts/SPS", "charts/episodic_return", "losses/qf1_loss", "losses/qf2_loss", "losses/actor_loss",
                "losses/qf1_values", "eval/episodic_return", "eval/smoothness", "eval/action_change"}


def scalars(run_dir: pathlib.Path) -> dict[str, list]:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: accumulator.Scalars(tag) for tag in accumulator.Tags()["scalars"]}


def method_scalars(script: str) -> set[str]:
    """The `losses/...` names a variant logs beyond its base's: its method terms."""
    base = "td3_continuous" if script.startswith("td3") else "sac_continuous"
    return logged_names(script) - logged_names(base)


def logged_names(script: str) -> set[str]:
    text = (PACKAGE / f"{script}.py").read_text()
    returned = {f"losses/{name}" for literal, keywords in RETURNED.findall(text)
                for name in re.findall(r'"(\w+)":', literal) + re.findall(r'(\w+)=', keywords)}
    return set(LOGGED.findall(text)) | returned


def tiny_run(script: str, env_id: str, **overrides) -> tuple[dict, pathlib.Path]:
    module = importlib.import_module(f"cleanrl_pave.{script}")
    settings = dict(env_id=env_id, total_timesteps=300, learning_starts=100, hidden_sizes=(32, 32), eval_freq=150,
                    eval_episodes=1, run_name="smoke", seed=1, save_model=True, **eager(module))
    settings.update(overrides)
    return module.main(module.Args(**settings)), pathlib.Path("runs/smoke")


def check_outputs(script: str, run_dir: pathlib.Path, total: int, eval_freq: int) -> None:
    """A finished run's results.json, TensorBoard scalars (the base's and the method's own) and weights-only model."""
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk["script"] == script and on_disk["global_step"] == total
    assert len(on_disk["eval"]["episode_returns"]) == on_disk["config"]["eval_episodes"]
    assert [entry["step"] for entry in on_disk["eval_history"]] == list(range(eval_freq, total + 1, eval_freq))
    logged = scalars(run_dir)
    missing = (BASE_SCALARS | method_scalars(script)) - logged.keys()
    assert not missing, f"{script} did not log {sorted(missing)}"
    assert max(event.step for event in logged["losses/qf1_loss"]) == total
    assert_loads_weights_only(run_dir / f"{script}.cleanrl_model")


def assert_same(safe, full, where="payload") -> None:
    assert type(safe) is type(full), where
    if isinstance(full, torch.Tensor):
        assert safe.dtype == full.dtype and torch.equal(safe, full), where
    elif isinstance(full, dict):
        assert safe.keys() == full.keys(), where
        for key in full:
            assert_same(safe[key], full[key], f"{where}[{key!r}]")
    elif isinstance(full, (list, tuple)):
        assert len(safe) == len(full), where
        for index, (item, expected) in enumerate(zip(safe, full)):
            assert_same(item, expected, f"{where}[{index}]")
    else:
        assert safe == full or (safe != safe and full != full), where  # NaN equals NaN here


def assert_loads_weights_only(path: pathlib.Path) -> None:
    """The file holds tensors and plain types only (it cannot run code when opened), and a weights-only load gives
    exactly what full unpickling gives."""
    assert_same(torch.load(path, weights_only=True), torch.load(path, weights_only=False))


BEGIN = re.compile(r"^\s*# ===== (?P<name>.+) begin =====\s*$")
END = re.compile(r"^\s*# ===== (?P<name>.+) end =====\s*$")


def method_blocks(lines: list[str]) -> list[tuple[int, int]]:
    """(first, last) line indices of each block, markers included; raises on unbalanced or nested markers."""
    blocks, open_block = [], None
    for index, line in enumerate(lines):
        if BEGIN.match(line):
            assert open_block is None, f"line {index + 1}: block opened inside another block"
            open_block = (index, BEGIN.match(line)["name"])
        elif END.match(line):
            assert open_block is not None, f"line {index + 1}: block end without a begin"
            assert END.match(line)["name"] == open_block[1], f"line {index + 1}: end of {END.match(line)['name']!r} " \
                                                             f"closes block {open_block[1]!r}"
            blocks.append((open_block[0], index))
            open_block = None
    assert open_block is None, f"line {open_block[0] + 1}: block {open_block[1]!r} is never closed"
    return blocks


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


def wandb_offline_records(run_dir) -> list:
    """The records of an offline W&B run's .wandb file (a LevelDB-style log of protobuf Records: a 7-byte file
    header, then 32 KiB blocks of chunks, each with a 7-byte header: checksum, length, type), so tests can read
    what a run declared (its group, tags, config, step metrics) without a W&B server."""
    import struct

    from wandb.proto import wandb_internal_pb2

    [path] = list(run_dir.glob("*.wandb"))
    data, position, pending, records = path.read_bytes(), 7, b"", []
    while position + 7 <= len(data):
        left = 32768 - position % 32768
        if left < 7:  # a block's tail too short for a chunk header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if length == 0 and kind == 0:
            break
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


ZYGOTE_PROGRAM = r'''
import json, os, runpy, signal, sys, traceback
# everything a script imports, imported once: a run forked from here starts without Python's and torch's import time
import gymnasium, numpy, torch, torch._dynamo, tyro  # noqa: F401
from torch.utils.tensorboard import SummaryWriter  # noqa: F401
import cleanrl_pave.checkpointing, cleanrl_pave.checks, cleanrl_pave.compiling, cleanrl_pave.critic_geometry  # noqa
import cleanrl_pave.evaluation, cleanrl_pave.monitoring, cleanrl_pave.nonfinite_guard, cleanrl_pave.provenance  # noqa

def run(request):
    """In the forked child: become `python ARGV...` in CWD with stdout/stderr on the given files; never returns."""
    code = 1
    try:
        if request["new_session"]:
            os.setsid()
        stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND) if request["stderr"] else stdout
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0), os.dup2(stdout, 1), os.dup2(stderr, 2)
        os.chdir(request["cwd"])
        sys.argv = request["argv"]
        try:
            runpy.run_path(request["argv"][0], run_name="__main__")
            code = 0
        except SystemExit as stop:  # as the interpreter handles it: an int is the exit code, anything else is printed
            code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
            if not isinstance(stop.code, (int, type(None))):
                print(stop.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)

finished = {}
for line in sys.stdin:
    request = json.loads(line)
    if request["op"] == "start":
        pid = os.fork()
        if pid == 0:
            run(request)
        reply = {"pid": pid}
    else:  # poll: the exit code once the run has ended (negative: killed by that signal), else null
        pid = request["pid"]
        if pid not in finished:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                finished[pid] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        reply = {"returncode": finished.get(pid)}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
'''


class Zygote:
    """Starts script runs as real processes forked from one Python process that has imported torch, gymnasium and the
    scripts' helpers already: a run then starts in milliseconds rather than the ~5 s of a fresh interpreter, which is
    most of a short test run. A forked run is `python script.py ARGS` in every way a test sees: its own pid, its own
    session if asked, its exit code, and signals sent to it (the scripts import nothing the zygote lacks)."""

    def __init__(self, repo: pathlib.Path):
        self.process = subprocess.Popen([sys.executable, "-c", ZYGOTE_PROGRAM], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(repo)})

    def request(self, **message) -> dict:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def start(self, argv: list[str], cwd: pathlib.Path, stdout: pathlib.Path, stderr: pathlib.Path | None = None,
              new_session: bool = False) -> "ForkedRun":
        """argv[0] is the script (`python` itself is implied)."""
        reply = self.request(op="start", argv=[str(part) for part in argv], cwd=str(cwd), stdout=str(stdout),
                             stderr=str(stderr) if stderr else None, new_session=new_session)
        return ForkedRun(self, reply["pid"])

    def run(self, argv: list[str], cwd: pathlib.Path, timeout: float = 300.0) -> tuple[int, str, str]:
        """Run to the end, as subprocess.run would: (exit code, stdout, stderr), the output kept in files under cwd."""
        stdout, stderr = pathlib.Path(cwd) / ".zygote.stdout", pathlib.Path(cwd) / ".zygote.stderr"
        for path in (stdout, stderr):
            path.unlink(missing_ok=True)
        code = self.start(argv, cwd, stdout, stderr).wait(timeout)
        output = [path.read_text() if path.exists() else "" for path in (stdout, stderr)]
        for path in (stdout, stderr):
            path.unlink(missing_ok=True)
        return code, *output

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


class ForkedRun:
    """The part of subprocess.Popen the tests use, for a run forked by a Zygote."""

    def __init__(self, zygote: Zygote, pid: int):
        self.zygote, self.pid, self.returncode = zygote, pid, None

    def poll(self):
        if self.returncode is None:
            self.returncode = self.zygote.request(op="poll", pid=self.pid)["returncode"]
        return self.returncode

    def wait(self, timeout: float = 300.0) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {self.pid} still running after {timeout} s")
            time.sleep(0.01)
        return self.returncode

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
