"""How many calibration images does a conversion need? Top-1 against the calibration set's size.

The digits ViT (``transpike.digits``) is converted from the first n images of a seeded shuffle of
the training split (n = 8 to all 1078; ``transpike eval`` takes ``--calib-batches`` ×
``--calib-batch-size``, 512 by default) and evaluated on the 719 test images at T = 8, for three
configurations and three shuffles (seeds 0-2; the whole split is one set, so its row is seed 0
only). Per configuration and n: SNN - ANN top-1 at t = 1, 2, 4, 8, the median over the shuffles
and, in brackets, their range (largest - smallest).

    python benchmarks/calibration_size.py [--out benchmarks/out/calibration_size.json]
"""

from __future__ import annotations

import statistics

import torch
from accuracy import digits_setup, write_output

import transpike
from transpike.evaluate import evaluate

T = 8
SIZES = (8, 32, 128, 512, 1078)
SEEDS = (0, 1, 2)
STEPS = (1, 2, 4, 8)
CONFIGS = {
    "paper default": {},
    "mse + nearest": dict(threshold="mse", rounding="nearest"),
    "mse + nearest, 4 levels per octave": dict(threshold="mse", rounding="nearest", levels_per_octave=4),
}


def main() -> None:
    args, model, x_train, test = digits_setup(__doc__, "benchmarks/out/calibration_size.json")
    rows = []
    for name, options in CONFIGS.items():
        for size in SIZES:
            runs = []
            for seed in SEEDS if size < len(x_train) else SEEDS[:1]:
                order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
                snn = transpike.convert(model, x_train[order[:size]].split(256), **options)
                result = evaluate(snn, model, test, T, batch_size=256, progress=False, energy=False, exits=())
                runs.append([result["snn_top1"][t - 1] - result["ann_top1"] for t in STEPS])
            rows.append(dict(config=name, images=size, differences=runs))
            print(
                f"{name}, {size} images: " + " | ".join(" ".join(f"{d:+.2f}" for d in r) for r in runs),
                flush=True,
            )

    write_output(args.out, test, rows, time_steps=T)
    print("\n| configuration | images | " + " | ".join(f"t = {t}" for t in STEPS) + " |")
    print("|---|---|" + "---|" * len(STEPS))
    for row in rows:
        columns = list(zip(*row["differences"], strict=True))
        cells = [f"{statistics.median(c):+.2f} ({max(c) - min(c):.2f})" for c in columns]
        print(f"| {row['config']} | {row['images']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
