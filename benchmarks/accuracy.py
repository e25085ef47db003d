"""Accuracy and energy on the digits ViT: ANN against SNN top-1 and SNN/ANN energy at t = 1..8.

The small ViT of ``transpike.digits`` (trained here, seeded, cached) is calibrated on the training
split and evaluated on the test split with ``transpike.evaluate`` (energy accounting on). Per
configuration: top-1 after every t, the SNN/ANN energy after every t (ECMT's form: synaptic ACs
only; full form: with the analog float work), spikes per neuron per step and the largest number of
spikes one neuron emits in one step; the 95 % interval of SNN - ANN from paired samples. Also:
simulation time with and without accounting, and the early-exit rule (``transpike.exits``) read
from the same runs: per confidence threshold c, top-1 and the mean number of steps, against fixed
steps of the same mean. And per t the share of test images whose SNN top-1 is the ANN's (right or
wrong), which equal accuracies can hide.

    python benchmarks/accuracy.py [--out benchmarks/out/accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

import transpike
from transpike.digits import load_digits_split, trained_digits_vit
from transpike.evaluate import evaluate
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
    "mse, 4 levels per octave": dict(threshold="mse", levels_per_octave=4),
    "mse + nearest, 2 levels per octave": dict(threshold="mse", rounding="nearest", levels_per_octave=2),
    "mse + nearest, 4 levels per octave": dict(threshold="mse", rounding="nearest", levels_per_octave=4),
    "mse + nearest + per-channel, 4 levels per octave": dict(
        threshold="mse", rounding="nearest", granularity="channel", levels_per_octave=4
    ),
    "burst + mse, levels=4": dict(neuron="burst", threshold="mse", levels=4),
    "burst + mse": dict(neuron="burst", threshold="mse"),
    "SIT (K = 12)": dict(method="sit"),
    "SIT, burst + mse": dict(method="sit", neuron="burst", threshold="mse"),
    "SIT, burst + mse, N = 2^16": dict(method="sit", neuron="burst", threshold="mse", sit_norm_spikes=2**16),
}


def accounting_overhead(snn: transpike.SpikingModel, x: torch.Tensor, repeats: int = 9) -> dict[str, float]:
    """Time with accounting over time without, medians over interleaved repeats.

    ``account``: one ``transpike.account`` call (spike monitor and the one-off dense count);
    ``per batch``: a simulation under a spike monitor, what ``evaluate`` pays for every batch.
    """

    def seconds(run) -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    def monitored() -> None:
        with SpikeMonitor(snn):
            snn.simulate(x, T)

    ratios: dict[str, list[float]] = {"account": [], "per batch": []}
    for _ in range(repeats):
        plain = seconds(lambda: snn.simulate(x, T))
        ratios["account"].append(seconds(lambda: transpike.account(snn, x, T)) / plain)
        ratios["per batch"].append(seconds(monitored) / plain)
    return {name: round(statistics.median(values), 2) for name, values in ratios.items()}


def at_steps(top1: list[float], steps: float) -> float:
    """Top-1 of fixed steps spending ``steps`` on average: a share of the samples stopped after
    floor(steps), the rest after the next step, chosen without looking at them (linear
    interpolation between the fixed-t accuracies)."""
    low = min(int(steps), len(top1) - 1)
    return top1[low - 1] + (steps - low) * (top1[low] - top1[low - 1])


def exit_cells(row: dict, confidences: tuple[float, ...] = (0.9, 0.99)) -> str:
    """Per threshold c: top-1 - ANN's at the mean number of steps, and the same for fixed steps of
    that mean."""
    cells = []
    for exit_row in (r for r in row["early_exit"] if r["rule"] == "confidence" and r["value"] in confidences):
        steps = exit_row["mean_steps"]
        gap, fixed = (
            value - row["ann_top1"] for value in (exit_row["snn_top1"], at_steps(row["snn_top1"], steps))
        )
        cells.append(
            f"{gap:+.2f} at {steps:.2f} steps (fixed: {fixed:+.2f}), energy {exit_row['energy_ratio']:.2f}"
        )
    return " | ".join(cells)


def digits_setup(
    doc: str, out: str
) -> tuple[argparse.Namespace, torch.nn.Module, torch.Tensor, TensorDataset]:
    """The digits benchmarks' command line (``--out``, default ``out``; described by the script's
    ``doc``) and what they run on: the trained ViT, the training images, the test set."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(out))
    args = parser.parse_args()
    x_train, _ = load_digits_split("train")
    return args, trained_digits_vit(), x_train, TensorDataset(*load_digits_split("test"))


def write_output(path: Path, test: TensorDataset, rows: list[dict], **fields: object) -> None:
    """A digits benchmark's ``rows`` as JSON at ``path``, with ``fields`` and what produced them."""
    output = dict(
        model="transpike.digits (ViT, 4 blocks, width 64)",
        test_samples=len(test),
        **fields,
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        torch=torch.__version__,
        rows=rows,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(output, indent=1))


def main() -> None:
    args, model, x_train, test = digits_setup(__doc__, "benchmarks/out/accuracy.json")
    rows = []
    for name, options in CONFIGS.items():
        snn = transpike.convert(model, x_train.split(256), **options)
        result = evaluate(snn, model, test, T, batch_size=256, progress=False)
        energy = result["energy"]
        spikes = sum(sum(s["firing_rate"]) * s["neurons"] for s in energy.sites)
        rows.append(
            dict(
                config=name,
                options=options,
                ann_top1=result["ann_top1"],
                snn_top1=result["snn_top1"],
                energy_ecmt=energy.ratio["ecmt"],
                energy_full=energy.ratio["full"],
                spikes_per_neuron_step=spikes / sum(s["neurons"] for s in energy.sites) / T,
                max_spikes_per_neuron_step=energy.max_spikes_per_neuron_step,
                difference_ci95=result["difference_ci95"],
                agreement=result["agreement"],
                early_exit=result["early_exit"],
            )
        )
        print(f"{name}: " + " ".join(f"{a:.2f}" for a in result["snn_top1"]), flush=True)
    batch = test.tensors[0][:256]
    overhead = {
        name: accounting_overhead(transpike.convert(model, x_train.split(256), **CONFIGS[name]), batch)
        for name in ("paper default", "burst + mse", "mse + nearest + per-channel", "SIT, burst + mse")
    }

    ann = rows[0]["ann_top1"]
    write_output(args.out, test, rows, ann_top1=ann, ann_macs_per_image=energy.ann_macs,
                 accounting_time_over_simulation=overhead)  # fmt: skip
    print(
        f"\nANN top-1 {ann:.2f} % on {len(test)} test images; "
        f"simulation with accounting / without: {overhead}"
    )
    print(
        "\n| configuration | SNN - ANN (points) t=1..8 | energy ECMT t=1 / 2 / 4 / 8 | energy full t=1 / 4 "
        "| spikes/neuron/step | max spikes/neuron/step |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['config']} | " + " ".join(f"{a - ann:+.2f}" for a in r["snn_top1"])
            + " | " + " / ".join(f"{r['energy_ecmt'][t - 1]:.2f}" for t in (1, 2, 4, 8))
            + " | " + " / ".join(f"{r['energy_full'][t - 1]:.2f}" for t in (1, 4))
            + f" | {r['spikes_per_neuron_step']:.2f} | {r['max_spikes_per_neuron_step']} |"
        )  # fmt: skip
    print("\n| configuration | SNN - ANN ± 95 % interval (paired), t = 1 / 2 / 4 / 8 |")
    print("|---|---|")
    for r in rows:
        cells = (
            f"{r['snn_top1'][t - 1] - ann:+.2f} ± {r['difference_ci95'][t - 1]:.2f}" for t in (1, 2, 4, 8)
        )
        print(f"| {r['config']} | " + " / ".join(cells) + " |")
    print("\n| configuration | same top-1 as the ANN (%), t = 1 / 2 / 4 / 8 | SNN - ANN at t = 8 |")
    print("|---|---|---|")
    for r in rows:
        same = " / ".join(f"{r['agreement'][t - 1]:.2f}" for t in (1, 2, 4, 8))
        print(f"| {r['config']} | {same} | {r['snn_top1'][-1] - ann:+.2f} |")
    print("\n| configuration | early exit c = 0.9: SNN - ANN at mean t | c = 0.99 |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {exit_cells(r)} |")


if __name__ == "__main__":
    main()
