"""Speed and memory: one SNN simulation step against one ANN forward on the same batch.

ANN forwards and SNN steps are interleaved (ANN, step, ANN, step, ...) so both see the same machine
load; the figure is the median over repeats of the per-pair ratio. Peak memory is the growth of the
process's peak resident set during ``simulate(x, T)`` against during one ANN forward, each measured
in a fresh subprocess. With ``--device cuda`` every timing waits for the GPU to finish, and peak
memory is the growth of PyTorch's peak GPU allocation instead.

    python benchmarks/speed.py [--models vit_tiny_patch16_224 vit_small_patch16_224] [--batch 8]
                               [--device cpu|cuda] [--fuse] [--graphs]

Each model runs at its own input size (timm's ``pretrained_cfg``): 224 px for most, 256 px for
SwinV2-T and EdgeNeXt; ``torchvision:NAME`` is torchvision's model at its ``image_size``, its ANN
forward the fused attention kernel torch runs in evaluation.

``--fuse`` runs the network with :meth:`transpike.SpikingModel.fuse` (each neuron's step compiled
into one kernel); the compilation happens in the two untimed warm-up steps. ``--graphs`` (a GPU
only) replays each step as a CUDA graph (:meth:`transpike.SpikingModel.graph`), captured in an
untimed warm-up run; the ANN forward is then also timed replayed as one CUDA graph, and the
monitored network (hooks cannot run in a graph) is left out. Its peak memory is that of the first,
capturing, ``simulate``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from memory import gpu_peak_growth_mib, in_fresh_process, peak_growth_mib

import transpike
from transpike.models import create_model
from transpike.spikes import SpikeMonitor


def build_ann(name: str, batch: int, device: str) -> tuple[torch.nn.Module, torch.Tensor]:
    model = create_model(name).to(device)  # timm's, or torchvision's for torchvision:NAME; seed 0
    gen = torch.Generator().manual_seed(1)
    if hasattr(model, "image_size"):  # torchvision's ViT
        shape = (3, model.image_size, model.image_size)
    else:  # the model's own size: 256 for SwinV2-T
        shape = model.pretrained_cfg.get("input_size", (3, 224, 224))
    return model, torch.randn(batch, *shape, generator=gen).to(device)


def build(
    name: str, batch: int, options: dict, device: str, fuse: bool = False, graphs: bool = False
) -> tuple[torch.nn.Module, transpike.SpikingModel, torch.Tensor]:
    model, x = build_ann(name, batch, device)
    snn = transpike.convert(model, [torch.randn_like(x) for _ in range(2)], **options)
    return model, snn.fuse(fuse).graph(graphs), x


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so that a wall-clock interval covers the kernels it launched."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(fn, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def graphed(model: torch.nn.Module, x: torch.Tensor):
    """The ANN forward on x captured as one CUDA graph (after warm-up forwards): its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            model(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model(x)
    return graph.replay


def speed(name: str, batch: int, repeats: int, options: dict, device: str, fuse: bool, graphs: bool) -> dict:
    """ANN forward, SNN step, and SNN step under a spike monitor (a copy of the same network); with
    ``graphs`` the ANN forward replayed as a CUDA graph instead of the monitored step."""
    model, snn, x = build(name, batch, options, device, fuse, graphs)
    counted = None if graphs else copy.deepcopy(snn)
    with torch.inference_mode(), SpikeMonitor(counted) if counted else contextlib.nullcontext():
        model(x)
        if graphs:  # capture the graphs of every step timed below
            snn.simulate(x, repeats + 2)
        third = graphed(model, x) if graphs else lambda: counted.step(x)
        for network in (snn, counted) if counted else (snn,):
            network.reset()
            for _ in range(2):  # steps 1-2 allocate state; later steps are the steady state
                network.step(x)
        runs = [
            (timed(lambda: model(x), device), timed(lambda: snn.step(x), device), timed(third, device))
            for _ in range(repeats)
        ]
    ann, step, other = zip(*runs, strict=True)
    row = dict(
        img_size=x.shape[-1],
        ann_ms=statistics.median(ann) * 1e3,
        step_ms=statistics.median(step) * 1e3,
        ratio=statistics.median(s / a for a, s, _ in runs),
    )
    if graphs:
        return dict(row, ann_graph_ms=statistics.median(other) * 1e3)
    return dict(row, monitored_over_step=statistics.median(c / s for _, s, c in runs))


def measure_peak(
    name: str, batch: int, steps: int, what: str, options: dict, device: str, fuse: bool, graphs: bool
) -> float:
    """Run in a fresh process: peak memory growth in MiB while running one ANN forward or simulate
    (resident set on the CPU, PyTorch's allocation on a GPU)."""
    if what == "ann":
        model, x = build_ann(name, batch, device)
        run = lambda: model(x)  # noqa: E731
    else:
        _, snn, x = build(name, batch, options, device, fuse, graphs)
        if fuse and not graphs:  # compile outside the measured call, then free the state again
            snn.simulate(x, 2)
            snn.reset()
        run = lambda: snn.simulate(x, steps)  # noqa: E731
    with torch.inference_mode():
        return gpu_peak_growth_mib(run, device) if device.startswith("cuda") else peak_growth_mib(run)


def state_mib(name: str, batch: int, options: dict, device: str, fuse: bool) -> float:
    """Simulation state (membranes, rates, sums) held after a run, in MiB: independent of T."""
    _, snn, x = build(name, batch, options, device, fuse)
    snn.simulate(x, 2)
    return snn.state_bytes() / 2**20


def peak_memory(
    name: str, batch: int, steps: int, what: str, options: dict, device: str, fuse: bool, graphs: bool
) -> float:
    call = f"measure_peak({name!r}, {batch}, {steps}, {what!r}, {options!r}, {device!r}, {fuse}, {graphs})"
    return in_fresh_process("speed", call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vit_tiny_patch16_224", "vit_small_patch16_224"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=8, help="T for the peak-memory measurement")
    parser.add_argument(
        "--options", type=json.loads, default={}, help='conversion options, e.g. \'{"neuron": "burst"}\''
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--fuse", action="store_true", help="each neuron's step as one compiled kernel")
    parser.add_argument("--graphs", action="store_true", help="each step replayed as a CUDA graph")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/speed.json"))
    args = parser.parse_args()

    rows = []
    for name in args.models:
        setting = (args.options, args.device, args.fuse, args.graphs)
        row = dict(model=name, **speed(name, args.batch, args.repeats, *setting))
        for what, key in (("ann", "ann_peak_mib"), ("snn", "simulate_peak_mib")):
            row[key] = peak_memory(name, args.batch, args.steps, what, *setting)
        row["state_mib"] = state_mib(name, args.batch, args.options, args.device, args.fuse)
        rows.append(row)
        print(row, flush=True)
    result = dict(
        batch=args.batch,
        steps=args.steps,
        options=args.options,
        fused=args.fuse,
        graphs=args.graphs,
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        device=torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
        torch=torch.__version__,
        rows=rows,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    third = "ANN forward as a CUDA graph" if args.graphs else "step with spike monitor / step"
    print(
        f"\n| model (batch {args.batch}) | ANN forward | SNN step | step / ANN (median of pairs) "
        f"| {third} | peak memory growth: ANN forward | simulate T={args.steps} | SNN state |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        other = f"{r['ann_graph_ms']:.1f} ms" if args.graphs else f"{r['monitored_over_step']:.2f}x"
        print(
            f"| {r['model']} at {r['img_size']} px | {r['ann_ms']:.1f} ms | {r['step_ms']:.1f} ms "
            f"| {r['ratio']:.2f}x | {other} | "
            f"+{r['ann_peak_mib']:.0f} MiB | +{r['simulate_peak_mib']:.0f} MiB | {r['state_mib']:.0f} MiB |"
        )


if __name__ == "__main__":
    main()
