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

from typing import Callable

import torch
import torch.utils._pytree as pytree

WARMUP_CALLS = 3  # eager calls before recording: they compile the losses and create the optimizer state


class CudaGraphed:
    """`fn` as a CUDA graph. Its first `warmup` calls run eager (on a side stream, as recording requires) and are real
    training steps; the next call records the graph, copying its tensor arguments into the graph's own input tensors,
    and replays it; every later call copies its arguments into those inputs and replays. It returns the recorded
    outputs, which each replay overwrites in place (read them before the next call).

    If recording fails, the run stops with one line saying why and how to train without graphs: a failed capture can
    leave the device's stream and the generator in capture state, so the process cannot simply go on eager."""

    def __init__(self, fn: Callable, generator: torch.Generator, what: str, warmup: int = WARMUP_CALLS):
        self.fn, self.generator, self.what, self.warmup = fn, generator, what, warmup
        self.calls, self.graph, self.inputs, self.outputs = 0, None, None, None

    def __call__(self, *args):
        if self.graph is not None:
            values, structure = pytree.tree_flatten(args)
            if structure != self.structure:
                raise ValueError(f"{self.what}: called with arguments of another structure than it was recorded with")
            for static, value in zip(self.inputs, values):  # a replay cannot take another shape or constant
                if not isinstance(static, torch.Tensor):
                    if static != value:
                        raise ValueError(f"{self.what}: {value!r} where it was recorded with {static!r}")
                elif static.shape != value.shape:
                    raise ValueError(f"{self.what}: shape {tuple(value.shape)} where it was recorded with "
                                     f"{tuple(static.shape)}")
                else:
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
        values, self.structure = pytree.tree_flatten(args)
        self.inputs = [torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device).copy_(x)
                       if isinstance(x, torch.Tensor) else x for x in values]
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.current_stream()
        try:
            graph.register_generator_state(self.generator)
            with torch.cuda.graph(graph):
                self.outputs = self.fn(*pytree.tree_unflatten(self.inputs, self.structure))
        except Exception as error:
            torch.cuda.set_stream(stream)  # an invalidated capture leaves its own stream current
            reason = (str(error).strip().splitlines() or [""])[0]
            raise SystemExit(f"error: could not record {self.what} as a CUDA graph ({type(error).__name__}: "
                             f"{reason}); train without --cudagraphs") from error
        self.graph = graph
        print(f"recorded {self.what} as a CUDA graph (after {self.warmup} eager calls)", flush=True)
        graph.replay()
        return self.outputs
