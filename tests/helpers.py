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
