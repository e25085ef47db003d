"""How much does calibrating on the evaluation images flatter a conversion, and what does it cost
to catch?

Part 1: the digits ViT (``transpike.digits``) converted from 719 training images (the first of a
seeded shuffle) and from the 719 test images themselves, both evaluated on the test images at
T = 8, for four configurations (thresholds per tensor and, with the most to fit, per channel).
Per t, SNN top-1 of each and the paired difference (test-calibrated - train-calibrated) with its
95 % interval and exact McNemar p (:mod:`transpike.compare`), and how many evaluated samples each
evaluation found to be calibration samples (:mod:`transpike.fingerprints`).

Part 2: what counting them costs: ``evaluate`` of the same network with its fingerprints and
without (``calibration_fingerprints = None``), alternated, median seconds over the repeats, on the
digits test set and on random 224 px images through a random-init vit_tiny; and the time to
fingerprint one 224 px image (median over the repeats of a batch of 32).

    python benchmarks/calibration_leak.py [--out benchmarks/out/calibration_leak.json]
"""

from __future__ import annotations

import statistics
import time

import timm
import torch
from accuracy import digits_setup, write_output
from torch.utils.data import TensorDataset

import transpike
from transpike.compare import paired_rows
from transpike.evaluate import evaluate
from transpike.fingerprints import fingerprints

T = 8
STEPS = (1, 2, 4, 8)
REPEATS = 9
CONFIGS = {
    "paper default": {},
    "mse + nearest": dict(threshold="mse", rounding="nearest"),
    "mse + nearest, 4 levels per octave": dict(threshold="mse", rounding="nearest", levels_per_octave=4),
    "mse + nearest, per channel": dict(threshold="mse", rounding="nearest", granularity="channel"),
}


def scored(snn, model, test) -> dict:
    """``snn`` evaluated on ``test`` at T steps, with every sample's predictions."""
    return evaluate(snn, model, test, T, 256, progress=False, energy=False, exits=(), predictions=True)


def leak(model, x_train, test) -> list[dict]:
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))
    x_test, labels = test.tensors
    rows = []
    for name, options in CONFIGS.items():
        train_run, test_run = (
            scored(transpike.convert(model, x.split(256), **options), model, test)
            for x in (x_train[order[: len(x_test)]], x_test)
        )
        first, second = train_run["predictions"]["snn"], test_run["predictions"]["snn"]
        paired = paired_rows(labels, first, second)
        rows.append(
            dict(
                config=name,
                ann_top1=train_run["ann_top1"],
                found=[train_run["calibration_samples"], test_run["calibration_samples"]],
                steps=[dict(t=t, **paired[t - 1]) for t in STEPS],
            )
        )
        print(name, [(r["t"], round(r["difference"], 2), round(r["p_value"], 3)) for r in rows[-1]["steps"]])
    return rows


def timed(snn, model, data, steps: int, batch: int) -> dict:
    """Median seconds of ``evaluate`` with the fingerprints kept and without, alternated."""
    kept, seconds = snn.calibration_fingerprints, {"with": [], "without": []}
    for _ in range(REPEATS):
        for case, prints in (("with", kept), ("without", None)):
            snn.calibration_fingerprints = prints
            start = time.perf_counter()
            evaluate(snn, model, data, steps, batch_size=batch, progress=False, energy=False, exits=())
            seconds[case].append(time.perf_counter() - start)
    snn.calibration_fingerprints = kept
    medians = {case: statistics.median(values) for case, values in seconds.items()}
    return dict(samples=len(data), time_steps=steps, **medians, ratio=medians["with"] / medians["without"])


def cost(model, x_train, test) -> list[dict]:
    digits = timed(transpike.convert(model, x_train.split(256)), model, test, T, 256)
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=10).eval()
    x = torch.randn(48, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    images = TensorDataset(x[16:], torch.zeros(32, dtype=torch.long))
    large = timed(transpike.convert(vit, x[:16]), vit, images, 4, 8)
    hashing = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fingerprints(x[16:])
        hashing.append((time.perf_counter() - start) / 32)
    large["fingerprint_ms"] = 1e3 * statistics.median(hashing)
    return [dict(data="digits test, 8 px", **digits), dict(data="random vit_tiny, 224 px", **large)]


def main() -> None:
    args, model, x_train, test = digits_setup(__doc__, "benchmarks/out/calibration_leak.json")
    rows, costs = leak(model, x_train, test), cost(model, x_train, test)
    write_output(args.out, test, rows, time_steps=T, cost=costs)
    print("\n| configuration | calibration samples found | " + " | ".join(f"t = {t}" for t in STEPS) + " |")
    print("|---|---|" + "---|" * len(STEPS))
    for row in rows:
        cells = [
            f"{s['first_top1']:.2f} → {s['second_top1']:.2f} ({s['difference']:+.2f} ± "
            f"{s['difference_ci95']:.2f}, p = {s['p_value']:.2g})"
            for s in row["steps"]
        ]
        print(f"| {row['config']} | {row['found'][0]} / {row['found'][1]} | " + " | ".join(cells) + " |")
    print(f"\nfingerprinting one 224 px image: {costs[1]['fingerprint_ms']:.2f} ms")
    print("\n| data | samples | T | with fingerprints (s) | without (s) | ratio |\n|---|---|---|---|---|---|")
    for c in costs:
        print(f"| {c['data']} | {c['samples']} | {c['time_steps']} | {c['with']:.3f} | {c['without']:.3f} | "
              f"{c['ratio']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
