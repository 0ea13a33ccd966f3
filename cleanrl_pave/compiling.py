"""torch.compile with a fallback: a function is compiled on its first call, and runs eager where it cannot be."""

from __future__ import annotations

import sys
import time
from typing import Callable

import torch
import torch.nn as nn


def compile_with_fallback(fn: Callable, what: str, opt_out_flag: str) -> Callable:
    """`fn` compiled with torch.compile. The first call compiles its forward AND backward (which torch would otherwise
    compile at the first backward, outside this guard) and prints the time once. If compiling fails (no C++ compiler,
    an unsupported platform, an error inside the compiler), one warning line says why and `fn` runs eager from then
    on: a run never dies of its compiler. The first call runs `fn` twice (one forward only feeds the warm-up
    backward), so `fn` must be free of side effects, and no tensor argument may depend on the parameters of a module
    argument (the warm-up backward would free that graph before the real one). With `--cudagraphs` on a GPU the
    compiled kernels are recorded with the rest of the update (cleanrl_pave/cuda_graphs.py)."""
    compiled = torch.compile(fn)
    chosen = None

    def call(*args):
        nonlocal chosen
        if chosen is not None:
            return chosen(*args)
        start = time.perf_counter()
        try:
            _compile_backward(compiled(*args), args)  # on a throwaway forward: its backward may not retain the graph
            outputs = compiled(*args)
        except Exception as error:  # whatever the compiler raised, the run goes on eager
            reason = (str(error).strip().splitlines() or [""])[0]
            print(f"warning: could not compile {what} ({type(error).__name__}: {reason}); running it eager "
                  f"({opt_out_flag} skips compiling and this warning)", file=sys.stderr, flush=True)
            chosen = fn
            return fn(*args)
        print(f"compiled {what} in {time.perf_counter() - start:.1f} s (once per process)", flush=True)
        chosen = compiled
        return outputs

    return call


def _compile_backward(outputs, args: tuple) -> None:
    """One backward through `outputs` (touching no .grad) so that its compilation happens now. It frees the graph:
    a compiled backward with donated buffers refuses retain_graph=True."""
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    values = outputs.values() if isinstance(outputs, dict) else outputs
    differentiable = [value for value in values if isinstance(value, torch.Tensor) and value.requires_grad]
    inputs = [param for arg in args if isinstance(arg, nn.Module) for param in arg.parameters() if param.requires_grad]
    inputs += [arg for arg in args if isinstance(arg, torch.Tensor) and arg.requires_grad]
    if differentiable and inputs:
        torch.autograd.grad(sum(value.sum() for value in differentiable), inputs, allow_unused=True)
