"""Accuracy: ANN top-1 against SNN top-1 at t = 1..8 on the digits test split, per configuration.

The small ViT of ``transpike.digits`` (trained here, seeded, cached) is calibrated on the training
split and evaluated on the test split. Beside accuracy: spikes per neuron per step, the largest
number of spikes one neuron emits in one step, and the synaptic operations up to t = 4 as a ratio to
the ANN's multiply-accumulates (ECMT's energy ratio is that times E_AC/E_MAC = 0.9/4.6).

    python benchmarks/accuracy.py [--out benchmarks/out/accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import transpike
from transpike.digits import load_digits_split, trained_digits_vit
from transpike.spikes import SpikeMonitor

T = 8
CONFIGS = {
    "paper default": {},
    "levels=1 (signed IF)": dict(levels=1),
    "no EC": dict(compensation=False),
    "per-channel": dict(granularity="channel"),
    "nearest": dict(rounding="nearest"),
    "burst": dict(neuron="burst"),
    "mse": dict(threshold="mse"),
    "mse + nearest": dict(threshold="mse", rounding="nearest"),
    "mse + nearest + per-channel": dict(threshold="mse", rounding="nearest", granularity="channel"),
    "burst + mse, levels=4": dict(neuron="burst", threshold="mse", levels=4),
    "burst + mse": dict(neuron="burst", threshold="mse"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/accuracy.json"))
    args = parser.parse_args()

    model = trained_digits_vit()
    x_train, _ = load_digits_split("train")
    x, y = load_digits_split("test")
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        ann_top1 = (model(x).argmax(-1) == y).double().mean().item() * 100
    macs = counter.get_total_flops() / 2
    rows = []
    for name, options in CONFIGS.items():
        snn = transpike.convert(model, x_train.split(256), **options)
        with SpikeMonitor(snn) as monitor:
            out = snn.simulate(x, T)
        top1 = [(out[t].argmax(-1) == y).double().mean().item() * 100 for t in range(T)]
        ops = torch.tensor(monitor.total_operations(), dtype=torch.float64).cumsum(0)
        rows.append(
            dict(
                config=name,
                options=options,
                snn_top1=top1,
                spikes_per_neuron_step=sum(monitor.total_spikes()) / monitor.neurons() / T,
                max_spikes_per_neuron_step=monitor.max_spikes_per_neuron(),
                acs_over_ann_macs=(ops / macs).tolist(),
            )
        )
        print(f"{name}: " + " ".join(f"{a:.2f}" for a in top1), flush=True)

    result = dict(
        model="transpike.digits (ViT, 4 blocks, width 64)",
        test_samples=len(y),
        ann_top1=ann_top1,
        ann_macs_per_image=macs / len(y),
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        torch=torch.__version__,
        rows=rows,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\nANN top-1 {ann_top1:.2f} % on {len(y)} test images; SNN minus ANN (points):\n")
    print(
        "| configuration | " + " | ".join(f"t={t}" for t in range(1, T + 1)) + " | spikes/neuron/step "
        "| max spikes/neuron/step | ACs/MACs at t=1 | at t=4 |"
    )
    print("|---" * (T + 5) + "|")
    for row in rows:
        diffs = " | ".join(f"{a - ann_top1:+.2f}" for a in row["snn_top1"])
        print(
            f"| {row['config']} | {diffs} | {row['spikes_per_neuron_step']:.2f} | "
            f"{row['max_spikes_per_neuron_step']} | {row['acs_over_ann_macs'][0]:.2f} | "
            f"{row['acs_over_ann_macs'][3]:.2f} |"
        )


if __name__ == "__main__":
    main()
