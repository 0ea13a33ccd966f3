"""`--cudagraphs` on a GPU: each whole training update, and the acting policy, recorded once as a CUDA graph and
replayed at every step (README "GPU").

Eager, one update launches a few hundred kernels from Python (losses, backward, the fused Adam step, the target
update), and on a GPU the step waits for those launches. A replay launches all of them at once. What a replay
computes is what the recorded call computed, on the same tensors: the parameters and the optimizer state are updated
in place, so the graph always sees the current ones, and the run's torch.Generator is registered with the graph, so
each replay continues its random stream where the eager calls before it left it.

What the recorded function may do: depend on its tensor arguments through their values only (a Python `if` on a flag
is fixed at recording), never sync with the host, and keep its state in place (the scripts' fused Adam is created
with `capturable=True`, the non-finite guard accumulates its flags in place).
"""

from __future__ import annotations

import sys
from typing import Callable

import torch
import torch.utils._pytree as pytree

WARMUP_CALLS = 3  # eager calls before recording: they compile the losses and create the optimizer state


class CudaGraphed:
    """`fn` as a CUDA graph. Its first `warmup` calls run eager (on a side stream, as recording requires) and are real
    training steps; the next call records the graph, copying its tensor arguments into the graph's own input tensors,
    and replays it; every later call copies its arguments into those inputs and replays. It returns the recorded
    outputs, which each replay overwrites in place (read them before the next call).

    If recording fails, one warning line says why and `fn` runs eager from then on, as the scripts do when a loss does
    not compile: a run never dies of its graphs."""

    def __init__(self, fn: Callable, generator: torch.Generator, what: str, warmup: int = WARMUP_CALLS):
        self.fn, self.generator, self.what, self.warmup = fn, generator, what, warmup
        self.calls, self.graph, self.inputs, self.outputs, self.eager = 0, None, None, None, False

    def __call__(self, *args):
        if self.eager:
            return self.fn(*args)
        if self.graph is not None:
            for static, value in zip(pytree.tree_leaves(self.inputs), pytree.tree_leaves(args)):
                if isinstance(static, torch.Tensor):
                    static.copy_(value)
            self.graph.replay()
            return self.outputs
        if self.calls < self.warmup:
            self.calls += 1
            return self._on_side_stream(args)
        return self._record(args)

    def _on_side_stream(self, args: tuple):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            outputs = self.fn(*args)
        torch.cuda.current_stream().wait_stream(side)
        return outputs

    def _record(self, args: tuple):
        # the graph's inputs keep the arguments' strides (a batch's fields are column views of one gather), so that a
        # compiled loss sees the layout it was compiled for and does not recompile while recording
        self.inputs = pytree.tree_map_only(
            torch.Tensor, lambda x: torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device).copy_(x),
            args)
        graph = torch.cuda.CUDAGraph()
        try:
            graph.register_generator_state(self.generator)
            with torch.cuda.graph(graph):
                self.outputs = self.fn(*self.inputs)
        except Exception as error:  # recording ran no kernel: the state is as before this call
            reason = (str(error).strip().splitlines() or [""])[0]
            print(f"warning: could not record {self.what} as a CUDA graph ({type(error).__name__}: {reason}); "
                  "running it eager (--no-cudagraphs skips recording and this warning)", file=sys.stderr, flush=True)
            self.eager, self.inputs, self.outputs = True, None, None
            return self.fn(*args)
        self.graph = graph
        print(f"recorded {self.what} as a CUDA graph (after {self.warmup} eager calls)", flush=True)
        graph.replay()
        return self.outputs
