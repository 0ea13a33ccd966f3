"""Peak memory and time of writing (and reading back) a checkpoint's replay buffer, at a chosen size.

    python benchmark/measurements/checkpoint_memory.py    # Humanoid-v5 size: 1e6 x (348 + 17 + 1 + 348 + 1) floats
    PYTHONPATH=OLD python benchmark/measurements/checkpoint_memory.py \
        --script OLD/cleanrl_pave/td3_continuous.py      # another version (OLD: a worktree of another commit)

The buffer is the ReplayBuffer class of `--script` (default: this checkout's td3_continuous.py), filled to
`--fill` of its capacity. The peak resident set (VmHWM, reset through /proc/self/clear_refs) is measured around
`atomic_torch_save({"replay_buffer": buffer.state_dict()}, ...)` and around loading the file back into a buffer as a
resume does; each line reports it against the resident set just before. Linux only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO))  # last: PYTHONPATH=OLD_CHECKOUT measures another version with its own package

from cleanrl_pave.checkpointing import atomic_torch_save, load_file  # noqa: E402


def memory_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM to the current resident set


def measured(action) -> dict:
    """Run `action()`; resident set before, peak during, and seconds taken."""
    reset_peak()
    before, start = memory_kib("VmRSS"), time.perf_counter()
    action()
    seconds, peak = time.perf_counter() - start, memory_kib("VmHWM")
    return {"rss_before_mib": before / 1024, "peak_mib": peak / 1024, "peak_ratio": peak / before, "seconds": seconds}


def replay_buffer_class(script: Path):
    spec = importlib.util.spec_from_file_location(f"measured_{abs(hash(script))}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ReplayBuffer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--script", type=Path, default=REPO / "cleanrl_pave" / "td3_continuous.py",
                        help="the script whose ReplayBuffer is measured")
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--obs-dim", type=int, default=348, help="default: Humanoid-v5's")
    parser.add_argument("--act-dim", type=int, default=17, help="default: Humanoid-v5's")
    parser.add_argument("--fill", type=float, default=1.0, help="filled fraction of the capacity")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the file (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if not 0 < args.fill <= 1:
        parser.error("--fill must be in (0, 1]")

    buffer_class = replay_buffer_class(args.script.resolve())
    fields = {"obs": (args.obs_dim,), "actions": (args.act_dim,), "rewards": (), "next_obs": (args.obs_dim,),
              "dones": ()}
    buffer = buffer_class(args.capacity, fields, torch.device("cpu"))
    buffer.size = buffer.pos = int(args.capacity * args.fill)
    buffer.storage[: buffer.size].uniform_()  # touch every row that is saved, as real transitions would
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        path = os.path.join(directory, "checkpoint.pt")
        write = measured(lambda: atomic_torch_save({"replay_buffer": buffer.state_dict()}, path))
        file_mib = os.path.getsize(path) / 2**20
        resumed = buffer_class(args.capacity, fields, torch.device("cpu"))
        resumed.storage.zero_()  # allocated and touched, as a resuming script's buffer is before it loads
        read = measured(lambda: resumed.load_state_dict(load_file(path)["replay_buffer"]))
        assert torch.equal(resumed.storage[: resumed.size], buffer.storage[: buffer.size])
    report = {"script": str(args.script), "capacity": args.capacity, "row_floats": buffer.storage.shape[1],
              "filled_rows": buffer.size, "buffer_mib": buffer.storage.numel() * 4 / 2**20, "file_mib": file_mib,
              "write": write, "read": read}
    for what in ("write", "read"):
        numbers = report[what]
        print(f"{what}: {numbers['seconds']:.1f} s, resident {numbers['rss_before_mib']:.0f} MiB before, peak "
              f"{numbers['peak_mib']:.0f} MiB ({numbers['peak_ratio']:.2f}x); file {file_mib:.0f} MiB", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
