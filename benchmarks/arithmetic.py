"""Energy at a chip's arithmetic: the same spikes priced as fp32, fp16 and int8 operations.

One simulation per network counts its spikes and dense work (``transpike.account``);
``EnergyReport.priced`` prices those counts at each arithmetic of ``transpike.energy.ARITHMETIC``
(45 nm, Horowitz 2014; int8: 8-bit operands, 32-bit sums, float work in fp32), the SNN's and its
ANN's alike. Networks: the digits ViT on its 719 test images (the paper's default, burst neurons
with mse thresholds and 8-bit synapses, and SIT's spiking softmax) and a random-init ViT-Tiny at 224
px on 8 random images (the paper's default). Per network and arithmetic: SNN/ANN energy in ECMT's
form and in the full form at t = 1, 2, 4, 8, the ANN's and the SNN's energy per sample at T (µJ,
full form), the first t after which the SNN has spent more than its ANN (full form; none: not
within T), and where the SNN's energy goes at T (``EnergyReport.breakdown``).

    python benchmarks/arithmetic.py [--out benchmarks/out/arithmetic.json]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import timm
import torch

import transpike
from transpike.digits import load_digits_split, trained_digits_vit
from transpike.energy import ARITHMETIC, PARTS, EnergyReport

T = 8
STEPS = (1, 2, 4, 8)
DIGITS = {
    "paper default": {},
    "burst + mse, 8-bit synapses": dict(neuron="burst", threshold="mse", weight_bits=8),
    "SIT (spiking softmax)": dict(method="sit"),
}


def priced(snn: transpike.SpikingModel, x: torch.Tensor) -> dict[str, EnergyReport]:
    """One simulation of x for T steps, its counts priced at every arithmetic."""
    report = transpike.account(snn, x, T)
    return {name: report.priced(**costs) for name, costs in ARITHMETIC.items()}


def rows_of(network: str, config: str, reports: dict[str, EnergyReport]) -> list[dict]:
    rows = []
    for arithmetic, report in reports.items():
        full = report.ratio["full"]
        row = dict(
            network=network,
            config=config,
            arithmetic=arithmetic,
            costs=ARITHMETIC[arithmetic],
            ecmt={t: report.ratio["ecmt"][t - 1] for t in STEPS},
            full={t: full[t - 1] for t in STEPS},
            ann_uj=report.ann_energy / 1e6,
            snn_uj=report.snn_energy[-1] / 1e6,
            costlier_after=report.costlier_from("full"),
            breakdown_uj={part: value / 1e6 for part, value in report.breakdown().items()},
        )
        rows.append(row)
        print(f"| {network} | {config} | {arithmetic} | "
              + " | ".join(f"{row['ecmt'][t]:.3f}" for t in STEPS) + " | "
              + " | ".join(f"{row['full'][t]:.3f}" for t in STEPS)
              + f" | {row['ann_uj']:.4g} | {row['snn_uj']:.4g} | {row['costlier_after'] or '-'} |",
              flush=True)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/arithmetic.json"))
    args = parser.parse_args()
    heads = [f"{form} t={t}" for form in ("ECMT form", "full") for t in STEPS]
    tail = " | ANN µJ | SNN µJ at T | SNN costlier after t |"
    print("| network | conversion | arithmetic | " + " | ".join(heads) + tail)
    print("|---" * (len(heads) + 6) + "|")
    rows = []
    model, (x_train, _), (x, _) = trained_digits_vit(), load_digits_split("train"), load_digits_split("test")
    for config, options in DIGITS.items():
        snn = transpike.convert(model, x_train.split(256), **options)
        rows += rows_of("digits ViT", config, priced(snn, x))
    torch.manual_seed(0)
    tiny = timm.create_model("vit_tiny_patch16_224").eval()
    gen = torch.Generator().manual_seed(1)
    calibration = [torch.randn(8, 3, 224, 224, generator=gen) for _ in range(4)]
    x = torch.randn(8, 3, 224, 224, generator=gen)
    snn = transpike.convert(tiny, calibration)
    rows += rows_of("ViT-Tiny (random init)", "paper default", priced(snn, x))
    print(f"\nwhere the SNN's energy goes after t = {T} (full form, % of it)\n")
    print("| network | conversion | arithmetic | " + " | ".join(PARTS.values()) + " |")
    print("|---" * (len(PARTS) + 3) + "|")
    for row in rows:
        total = sum(row["breakdown_uj"].values())
        shares = (100 * row["breakdown_uj"].get(part, 0.0) / total for part in PARTS)
        print(f"| {row['network']} | {row['config']} | {row['arithmetic']} | "
              + " | ".join(f"{share:.1f}" for share in shares) + " |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    args.out.write_text(json.dumps(dict(machine=machine, torch=torch.__version__, rows=rows), indent=1))


if __name__ == "__main__":
    main()
