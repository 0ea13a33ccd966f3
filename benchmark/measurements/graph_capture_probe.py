"""Which parts of a whole training update can be recorded as one CUDA graph on this machine (a GPU check).

Recording a whole update (issue: "the whole update as CUDA graphs") needs each of these inside torch.cuda.graph, and
replays that compute what eager steps compute. Each probe runs the same few steps eagerly and as graph replays from
the same start and reports the largest difference:

- adam: forward, backward and a fused, capturable Adam step of a small MLP, then a fused Polyak update of a copy
  (torch._foreach_lerp_), inputs copied into the graph's static tensors each step;
- generator: draws from the run's own torch.Generator (normal noise, Rademacher probes) inside the graph, registered
  with the graph, so that each replay continues the stream as eager draws would;
- sampling: batch indices drawn inside the graph from a buffer whose filled size is a device tensor (a Python int
  would be frozen into the graph at capture);
- found_inf: fused Adam skips its step when the `found_inf` tensor it was given holds 1, as the scripts' non-finite
  guard sets it, also inside the graph.

    python -m benchmark.measurements.graph_capture_probe --json probe.json      # on a GPU machine
Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib

import torch
import torch.nn as nn

STEPS = 20


def capture(step, warmup: int) -> torch.cuda.CUDAGraph:
    """Warm `step` up on a side stream (optimizer state, cuBLAS workspaces), then record one call of it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


def make_model(device: torch.device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.SiLU(), nn.Linear(64, 1)).to(device)
    target = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True, capturable=True)
    return model, target, optimizer


def probe_adam(device: torch.device) -> float:
    inputs = [torch.randn(32, 8, device=device, generator=torch.Generator(device).manual_seed(i)) for i in range(STEPS)]
    results = []
    for graphed in (False, True):
        model, target, optimizer = make_model(device)
        static = torch.zeros(32, 8, device=device)

        def step():
            loss = model(static).square().mean()
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            optimizer.step()
            torch._foreach_lerp_(list(target.parameters()), list(model.parameters()), 0.005)

        static.copy_(inputs[0])
        if graphed:
            graph = capture(step, warmup=3)  # three warm-up steps on inputs[0]; recording runs nothing
        else:
            for _ in range(3):
                step()
        for batch in inputs:
            static.copy_(batch)
            if graphed:
                graph.replay()
            else:
                step()
        results.append([parameter.detach().clone() for parameter in (*model.parameters(), *target.parameters())])
    return max((a - b).abs().max().item() for a, b in zip(*results))


def probe_generator(device: torch.device) -> float:
    draws = []
    for graphed in (False, True):
        generator = torch.Generator(device).manual_seed(7)
        out = torch.zeros(2, 256, device=device)

        def step():
            out[0].copy_(torch.randn(256, generator=generator, device=device))
            out[1].copy_(torch.randint(0, 2, (256,), generator=generator, device=device) * 2.0 - 1.0)

        if graphed:  # seeded, registered, recorded: the first replay should make the stream's first draws
            graph = torch.cuda.CUDAGraph()
            graph.register_generator_state(generator)
            with torch.cuda.graph(graph):
                step()
        values = []
        for _ in range(STEPS):
            if graphed:
                graph.replay()
            else:
                step()
            values.append(out.clone())
        draws.append(torch.stack(values))
    return (draws[0] - draws[1]).abs().max().item()


def probe_sampling(device: torch.device) -> float:
    storage = torch.arange(1000, device=device, dtype=torch.float32)
    samples = []
    for graphed in (False, True):
        generator = torch.Generator(device).manual_seed(3)
        size = torch.ones((), device=device)  # the buffer's filled size, on the device
        batch = torch.zeros(64, device=device)

        def step():
            indices = (torch.rand(64, generator=generator, device=device) * size).long()
            batch.copy_(storage[indices])

        if graphed:
            graph = torch.cuda.CUDAGraph()
            graph.register_generator_state(generator)
            with torch.cuda.graph(graph):
                step()
        values = []
        for filled in range(100, 100 + STEPS):
            size.fill_(float(filled))
            if graphed:
                graph.replay()
            else:
                step()
            assert batch.max().item() < filled, "an index past the filled part of the buffer"
            values.append(batch.clone())
        samples.append(torch.stack(values))
    return (samples[0] - samples[1]).abs().max().item()


def probe_found_inf(device: torch.device) -> float:
    model, _, optimizer = make_model(device)
    static = torch.randn(32, 8, device=device)
    found_inf = torch.zeros((), device=device)

    def step():
        loss = model(static).square().mean()
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.found_inf = found_inf
        optimizer.step()

    graph = capture(step, warmup=3)
    before = [parameter.detach().clone() for parameter in model.parameters()]
    found_inf.fill_(1.0)
    graph.replay()
    skipped = max((a - b).abs().max().item() for a, b in zip(before, model.parameters()))
    found_inf.fill_(0.0)
    graph.replay()
    moved = max((a - b).abs().max().item() for a, b in zip(before, model.parameters()))
    assert moved > 0, "the replay with found_inf = 0 did not step"
    return skipped


PROBES = {"adam": probe_adam, "generator": probe_generator, "sampling": probe_sampling, "found_inf": probe_found_inf}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("graph_capture_probe: no CUDA device here; nothing probed")
        return
    device = torch.device("cuda")
    results = {"torch": torch.__version__, "device": torch.cuda.get_device_name()}
    for name, probe in PROBES.items():
        try:
            difference = probe(device)
            results[name] = {"max_abs_difference": difference}
            print(f"{name:10s} graph replays vs eager: largest difference {difference:.3g}", flush=True)
        except Exception as error:  # a probe that cannot be recorded is the finding
            results[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
            print(f"{name:10s} failed: {results[name]['error']}", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
