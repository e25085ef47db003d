"""Fidelity: relative L2 error of the SNN's mean logits against the ANN, by time step.

Random-init timm vit_tiny_patch16_224 at 224 px, calibrated on a few batches of random images and
evaluated on another. Beside every error: the largest number of spikes one neuron emits in one step
and the synaptic operations (ACs) spent up to t, per image and as a ratio to the ANN's MACs, since
equal T is not equal work.

    python benchmarks/fidelity.py [--model vit_tiny_patch16_224] [--out benchmarks/out/fidelity.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import transpike
from transpike.spikes import SpikeMonitor

STEPS = (1, 2, 4, 8, 16)
CONFIGS = {
    "paper default (percentile 99, greedy, per-tensor)": {},
    "nearest": dict(rounding="nearest"),
    "mse": dict(threshold="mse"),
    "mse + nearest": dict(threshold="mse", rounding="nearest"),
    "mse + nearest + per-channel": dict(threshold="mse", rounding="nearest", granularity="channel"),
    "levels=1 (signed IF)": dict(levels=1),
    "no EC": dict(compensation=False),
    "burst + mse": dict(neuron="burst", threshold="mse"),
}


def ann_macs(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Multiply-accumulates of one ANN forward per image, counted by PyTorch's flop counter."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops() / 2 / x.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--calib-batches", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/fidelity.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    model = timm.create_model(args.model, img_size=args.img_size).eval()
    gen = torch.Generator().manual_seed(1)
    shape = (args.batch, 3, args.img_size, args.img_size)
    calibration = [torch.randn(shape, generator=gen) for _ in range(args.calib_batches)]
    x = torch.randn(shape, generator=gen)
    with torch.inference_mode():
        ref = model(x)
    macs = ann_macs(model, x)
    rows = []
    for name, options in CONFIGS.items():
        start = time.perf_counter()
        snn = transpike.convert(model, calibration, **options)
        with SpikeMonitor(snn) as monitor:
            y = snn.simulate(x, max(STEPS))
        ops = torch.tensor(monitor.total_operations(), dtype=torch.float64).cumsum(0) / args.batch
        rows.append(
            dict(
                config=name,
                options=options,
                error={t: ((y[t - 1] - ref).norm() / ref.norm()).item() for t in STEPS},
                max_spikes_per_neuron_step=monitor.max_spikes_per_neuron(),
                spikes_per_neuron_step=sum(monitor.total_spikes()) / monitor.neurons() / max(STEPS),
                acs_per_image={t: ops[t - 1].item() for t in STEPS},
                acs_over_ann_macs={t: ops[t - 1].item() / macs for t in STEPS},
                seconds=time.perf_counter() - start,
            )
        )
        print(f"{name}: " + " ".join(f"{e:.3f}" for e in rows[-1]["error"].values()), flush=True)

    result = dict(
        model=args.model,
        img_size=args.img_size,
        batch=args.batch,
        calib_batches=args.calib_batches,
        ann_macs_per_image=macs,
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        torch=torch.__version__,
        rows=rows,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print()
    print(
        "| configuration | " + " | ".join(f"t={t}" for t in STEPS) + " | max spikes/neuron/step "
        "| spikes/neuron/step | ACs / ANN MACs at t=4 | at t=16 |"
    )
    print("|---" * (len(STEPS) + 5) + "|")
    for row in rows:
        errors = " | ".join(f"{row['error'][t]:.3f}" for t in STEPS)
        print(
            f"| {row['config']} | {errors} | {row['max_spikes_per_neuron_step']} | "
            f"{row['spikes_per_neuron_step']:.2f} | {row['acs_over_ann_macs'][4]:.2f} | "
            f"{row['acs_over_ann_macs'][16]:.2f} |"
        )


if __name__ == "__main__":
    main()
