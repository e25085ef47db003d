"""How good is the early-exit energy estimate? Against the energy measured sample group by group.

``transpike.exits.exit_table`` estimates the energy of the early-exit rule from the average
sample's energy after every t: Σ_t share(t)·E(t), as if every sample spent what the average one
does up to its exit step. Here the digits ViT's test images are grouped by their exit step t*
and each group is simulated for t* steps under ``transpike.account``, which gives the energy the
rule really costs: Σ_groups |group|·E_group(t*) / N. Per configuration and threshold c: both, and
their ratio (ECMT form, SNN/ANN).

    python benchmarks/exit_energy.py [--out benchmarks/out/exit_energy.json]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

import transpike
from transpike.digits import load_digits_split, trained_digits_vit
from transpike.exits import exit_counts, exit_steps, exit_table

T = 8
CONFIDENCES = (0.5, 0.9, 0.99)
CONFIGS = {
    "paper default": {},
    "mse + nearest": dict(threshold="mse", rounding="nearest"),
    "mse + nearest, 4 levels per octave": dict(threshold="mse", rounding="nearest", levels_per_octave=4),
    "burst + mse": dict(neuron="burst", threshold="mse"),
}


def measured(snn: transpike.SpikingModel, x: torch.Tensor, steps: torch.Tensor) -> float:
    """The mean SNN/ANN energy (ECMT form) of the samples x, each simulated for its own exit step."""
    total = 0.0
    for index in steps.unique().tolist():
        group = x[steps == index]
        total += len(group) * transpike.account(snn, group, index + 1).ratio["ecmt"][index]
    return total / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/exit_energy.json"))
    args = parser.parse_args()
    model = trained_digits_vit()
    x_train, _ = load_digits_split("train")
    x, y = load_digits_split("test")
    rows = []
    print("| configuration | c | top-1 | mean steps | energy: estimate | measured | estimate / measured |")
    print("|---|---|---|---|---|---|---|")
    for name, options in CONFIGS.items():
        snn = transpike.convert(model, x_train.split(256), **options)
        with torch.inference_mode():
            outputs, logits = snn.simulate(x, T), model(x)
        average = transpike.account(snn, x, T).ratio["ecmt"]
        table = exit_table(exit_counts(outputs, y, CONFIDENCES, logits), CONFIDENCES, average)
        for c, steps, row in zip(CONFIDENCES, exit_steps(outputs, CONFIDENCES), table, strict=True):
            row.update(config=name, measured_energy_ratio=measured(snn, x, steps))
            rows.append(row)
            print(f"| {name} | {c:g} | {row['snn_top1']:.2f} | {row['mean_steps']:.2f} | "
                  f"{row['energy_ratio']:.4f} | {row['measured_energy_ratio']:.4f} | "
                  f"{row['energy_ratio'] / row['measured_energy_ratio']:.3f} |", flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    args.out.write_text(json.dumps(dict(machine=machine, torch=torch.__version__, rows=rows), indent=1))


if __name__ == "__main__":
    main()
