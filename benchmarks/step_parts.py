"""Where a fused SNN step's time goes, on the CPU (BENCHMARKS.md §3).

In one process: an ANN forward, an SNN step, and an SNN step whose MT neurons skip their compiled
kernels (the call returns at once: everything else in the step still runs, on stale sums),
interleaved; each figure is the median over rounds of two consecutive calls after an untimed one.
Then every compiled neuron call of a few steps is timed inside the network and, per call site,
again alone on copies of its inputs: if the two agree, the neurons cost inside the network what
they cost alone.

    python benchmarks/step_parts.py [--model vit_tiny_patch16_224] [--batch 8] [--rounds 12]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path

import timm
import torch

import transpike
import transpike.neurons

compiled = transpike.neurons.fused  # what MTNeuron and fire_both call for a fused step


def skipped(function, *args, batched=0):
    """A fused call that does nothing: the input stands in for spikes someone reads."""
    return args[0] if args[-1] is True else None


def pair_ms(run) -> float:
    """Mean time of two consecutive calls after an untimed one, in ms."""
    run()
    start = time.perf_counter()
    run()
    run()
    return (time.perf_counter() - start) / 2 * 1e3


def interleaved(model, snn, x, rounds: int) -> dict:
    """ANN forward, SNN step and SNN step without neuron kernels, one round of each in turn."""

    def step_without_neurons():
        transpike.neurons.fused = skipped
        try:
            snn.step(x)
        finally:
            transpike.neurons.fused = compiled

    parts = dict(ann=lambda: model(x), step=lambda: snn.step(x), step_without_neurons=step_without_neurons)
    times = {name: [] for name in parts}
    for _ in range(rounds):
        for name, run in parts.items():
            times[name].append(pair_ms(run))
    return {f"{name}_ms": statistics.median(values) for name, values in times.items()}


def per_site(snn, x, steps: int = 4) -> list[dict]:
    """Every compiled neuron call of ``steps`` steps, grouped by function and input shape: time per
    call inside the network, and alone (median of 7 calls on copies of the first call's inputs)."""
    inside, inputs = defaultdict(list), {}

    def timed(function, *args, batched=0):
        shapes = dict.fromkeys(tuple(a.shape) for a in args[:batched] if isinstance(a, torch.Tensor))
        key = (function.__name__, *shapes)
        start = time.perf_counter()
        result = compiled(function, *args, batched=batched)
        inside[key].append(time.perf_counter() - start)
        if key not in inputs:
            inputs[key] = (function, [a.clone() if isinstance(a, torch.Tensor) else a for a in args], batched)
        return result

    transpike.neurons.fused = timed
    try:
        for _ in range(steps):
            snn.step(x)
    finally:
        transpike.neurons.fused = compiled
    rows = []
    for key, times in inside.items():
        function, args, batched = inputs[key]
        compiled(function, *args, batched=batched)
        alone = []
        for _ in range(7):
            start = time.perf_counter()
            compiled(function, *args, batched=batched)
            alone.append(time.perf_counter() - start)
        rows.append(
            dict(
                function=key[0],
                shapes=[list(shape) for shape in key[1:]],
                calls_per_step=len(times) / steps,
                inside_ms=statistics.median(times) * 1e3,
                alone_ms=statistics.median(alone) * 1e3,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/step_parts.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    model = timm.create_model(args.model).eval()
    x = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    snn = transpike.convert(model, [torch.randn_like(x) for _ in range(2)]).fuse()
    with torch.inference_mode():
        snn.step(x)  # compiles every neuron kernel
        whole = interleaved(model, snn, x, args.rounds)
        sites = per_site(snn, x)
    neurons_inside = sum(row["calls_per_step"] * row["inside_ms"] for row in sites)
    neurons_alone = sum(row["calls_per_step"] * row["alone_ms"] for row in sites)
    result = dict(
        model=args.model,
        batch=args.batch,
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        torch=torch.__version__,
        **whole,
        neurons_inside_ms=neurons_inside,
        neurons_alone_ms=neurons_alone,
        sites=sites,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))

    ann = whole["ann_ms"]
    print(f"\n{args.model}, batch {args.batch}, fused: medians of {args.rounds} interleaved rounds")
    print("| ANN forward | SNN step | step without neuron kernels | neurons per step, inside / alone |")
    print("|---|---|---|---|")
    print(
        f"| {ann:.1f} ms | {whole['step_ms']:.1f} ms ({whole['step_ms'] / ann:.2f}×) | "
        f"{whole['step_without_neurons_ms']:.1f} ms ({whole['step_without_neurons_ms'] / ann:.2f}×) | "
        f"{neurons_inside:.1f} / {neurons_alone:.1f} ms |"
    )
    print("\n| compiled call | input shapes | calls per step | inside | alone |")
    print("|---|---|---|---|---|")
    for row in sites:
        print(
            f"| {row['function']} | {' and '.join(map(str, row['shapes']))} | {row['calls_per_step']:g} | "
            f"{row['inside_ms']:.3f} ms | {row['alone_ms']:.3f} ms |"
        )


if __name__ == "__main__":
    main()
