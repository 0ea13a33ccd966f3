"""Update path check of a training script, on any device: what the update makes stays on the model's device, and
nothing is read back to the host outside the logging interval. (tests/test_device.py runs it on the CPU for every
script; gpu_check.py runs it on a GPU machine.)

`UpdatePathChecker` is a TorchFunctionMode that watches every torch call a script's main() makes inside its update
block (the `if global_step > args.learning_starts ...:` block, located in the script's source, and everything called
from it) and records, with the line of the script or module that made it:

- "no device": a factory call (torch.zeros, torch.randn, torch.tensor, ... from `torch.utils._device`) without
  device=; on a GPU it lands on the CPU;
- "on <device>": a tensor that comes out of a call on another device type than the model's;
- "host read": .item(), .cpu(), .numpy(), .tolist(), bool/float/int of a tensor or torch.from_numpy outside the
  block's logging interval (`if global_step % args.log_freq == 0:`): a device-to-host sync or a NumPy round trip.

On a CPU-only machine the model's device and torch's default device are both the CPU, so a forgotten device= goes
unnoticed. With `stand_in="meta"` such calls get the meta device instead, as a GPU run would give them the CPU: the
run then fails where a GPU run fails, and the record says where. A GPU run needs no stand-in.

Not seen: the inside of autograd's backward pass (custom Function.backward bodies run with the mode suspended), and a
device spelled out as "cpu" when the model is on the CPU.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import importlib
import os
import pathlib
import sys
import types

import torch
import torch.utils._device
import torch.utils._pytree
from torch.overrides import TorchFunctionMode

PACKAGE_DIR = str(pathlib.Path(__file__).resolve().parents[2] / "cleanrl_pave") + os.sep
OVERRIDES_FILE = torch.overrides.__file__
FACTORIES = frozenset(torch.utils._device._device_constructors())
COPYING_FACTORIES = frozenset({torch.tensor, torch.as_tensor, torch.asarray})  # keep a tensor argument's device
HOST_READS = frozenset({torch.Tensor.item, torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.tolist,
                        torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__})


def update_block_lines(path: str) -> tuple[range, list[range]]:
    """Lines of main()'s update block in the script at `path`, and of the logging blocks inside it."""
    main = next(node for node in ast.parse(pathlib.Path(path).read_text()).body
                if isinstance(node, ast.FunctionDef) and node.name == "main")
    blocks = [node for node in ast.walk(main)
              if isinstance(node, ast.If) and "global_step > args.learning_starts" in ast.unparse(node.test)]
    if len(blocks) != 1:
        raise ValueError(f"{path}: expected one `if global_step > args.learning_starts` block in main, "
                         f"found {len(blocks)}")
    logging = [range(node.lineno, node.end_lineno + 1) for node in ast.walk(blocks[0])
               if isinstance(node, ast.If) and "args.log_freq == 0" in ast.unparse(node.test)]
    return range(blocks[0].lineno, blocks[0].end_lineno + 1), logging


class UpdatePathChecker(TorchFunctionMode):
    """Watches the torch calls of one script's update block (see the module docstring); use as a context manager
    around the script's main(). `findings` counts (kind, where, call) triples, `tensor_devices` the device types of
    every tensor that came out of a call in the block."""

    def __init__(self, module: types.ModuleType, model_device_type: str, stand_in: str | None = None):
        super().__init__()
        self.main_code = module.main.__code__
        self.source_files = {module.__file__}
        self.block, self.logging = update_block_lines(module.__file__)
        self.model_device_type = model_device_type
        self.stand_in = stand_in
        self.findings: collections.Counter = collections.Counter()
        self.tensor_devices: collections.Counter = collections.Counter()
        self._from_numpy = torch.from_numpy

    def _ours(self, frame) -> bool:
        filename = frame.f_code.co_filename
        return filename in self.source_files or filename.startswith(PACKAGE_DIR)

    def _locate(self, frame) -> tuple[int | None, object, object]:
        """(main's current line if main is on the stack, the direct caller, the innermost frame of our code)."""
        while frame is not None and frame.f_code.co_filename == OVERRIDES_FILE:
            frame = frame.f_back
        caller, ours = frame, None
        while frame is not None:
            if ours is None and self._ours(frame):
                ours = frame
            if frame.f_code is self.main_code:
                return frame.f_lineno, caller, ours
            frame = frame.f_back
        return None, caller, ours

    @staticmethod
    def _where(caller, ours) -> str:
        def name(frame):
            return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
        if ours is None or caller is ours:
            return name(caller)
        return f"{name(caller)} via {name(ours)}"

    def _record(self, kind: str, caller, ours, call: str) -> None:
        self.findings[(kind, self._where(caller, ours), call)] += 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        line, caller, ours = self._locate(sys._getframe(1))
        if line not in self.block:
            return func(*args, **kwargs)
        call = getattr(func, "__name__", repr(func))
        if func in HOST_READS and not any(line in block for block in self.logging):
            self._record("host read", caller, ours, call)
        if (func in FACTORIES and kwargs.get("device") is None and self._ours(caller)
                and not (func in COPYING_FACTORIES and args and isinstance(args[0], torch.Tensor))):
            self._record("no device", caller, ours, call)
            if self.stand_in is not None:
                kwargs = {**kwargs, "device": self.stand_in}
        result = func(*args, **kwargs)
        for leaf in torch.utils._pytree.tree_leaves(result):
            if isinstance(leaf, torch.Tensor):
                self.tensor_devices[leaf.device.type] += 1
                if leaf.device.type != self.model_device_type and func not in HOST_READS:
                    self._record(f"on {leaf.device.type}", caller, ours, call)
        return result

    def _checked_from_numpy(self, array):
        line, caller, ours = self._locate(sys._getframe(1))
        if line in self.block and not any(line in block for block in self.logging):
            self._record("host read", caller, ours, "from_numpy")
        return self._from_numpy(array)

    def __enter__(self):
        torch.from_numpy = self._checked_from_numpy  # a NumPy function to torch: no torch-function mode sees it
        return super().__enter__()

    def __exit__(self, *exc_info):
        torch.from_numpy = self._from_numpy
        return super().__exit__(*exc_info)

    def report(self) -> list[str]:
        """One line per finding: kind, where, call and how often."""
        return [f"{kind}: {call} at {where} ({count}x)" for (kind, where, call), count in sorted(self.findings.items())]


def script_args(module: types.ModuleType, settings: dict):
    """The script's Args from `settings`, leaving out settings the script does not have (e.g. a flag of another
    method), so one set of settings serves every script."""
    fields = {field.name for field in dataclasses.fields(module.Args)}
    return module.Args(**{key: value for key, value in settings.items() if key in fields})


def run_checked(script: str | types.ModuleType, settings: dict, model_device_type: str,
                stand_in: str | None = None) -> tuple[dict, UpdatePathChecker]:
    """Run a script's main() in this process under an UpdatePathChecker; returns (its results, the checker). An
    exception of the run propagates; the checker is then at `exc.update_path_checker`."""
    module = importlib.import_module(f"cleanrl_pave.{script}") if isinstance(script, str) else script
    checker = UpdatePathChecker(module, model_device_type, stand_in)
    try:
        with checker:
            results = module.main(script_args(module, settings))
    except BaseException as error:
        error.update_path_checker = checker
        raise
    return results, checker
