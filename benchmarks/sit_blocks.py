"""SIT's block-by-block conversion on the SIT paper's model families (and torchvision's ViT),
trained on the built-in digits.

EdgeNeXt and Next-ViT (METHODS.md §3.4; small configurations of timm's classes) and a small
torchvision ViT are trained on the digits' training split resized to 32 px with the default
model's recipe (``train_on_digits``, seeded), then converted with ECMT and with SIT, leaving all but
the first k blocks analog (``blocks=k``, counted over every stage, convolution blocks included;
torchvision's ``encoder.layers``), as the SIT paper's Tables 2-4 do. Per model, configuration (the
paper default; burst neurons with MSE thresholds), method and k: top-1 accuracy on the test split
after t steps (mean outputs), against the ANN's.

    python benchmarks/sit_blocks.py [--models edgenext nextvit torchvision_vit] [--time-steps 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torchvision.models import VisionTransformer

import transpike
from transpike.convert import block_paths
from transpike.digits import load_digits_split, train_on_digits

SIZE = 32


def resize(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=SIZE, mode="bilinear", align_corners=False)


def resize_rgb(x: torch.Tensor) -> torch.Tensor:
    """torchvision's ViT takes three channels: the gray digit in each."""
    return resize(x).expand(-1, 3, -1, -1)


#: name -> (what it is, how to build it untrained, the images it takes)
MODELS: dict[str, tuple[str, Callable[[], torch.nn.Module], Callable]] = {
    "edgenext": (
        "timm edgenext_xx_small, widths 16-64, depths 1/2/1/1",
        lambda: timm.create_model(
            "edgenext_xx_small", in_chans=1, num_classes=10, dims=(16, 32, 32, 64), depths=(1, 2, 1, 1),
            heads=(2, 2, 2, 2),
        ),
        resize,
    ),
    "nextvit": (
        "timm nextvit_small, depths 1/1/5/1",
        lambda: timm.create_model(
            "nextvit_small", in_chans=1, num_classes=10, depths=(1, 1, 5, 1), sr_ratios=(2, 2, 2, 1)
        ),
        resize,
    ),
    "torchvision_vit": (
        "torchvision VisionTransformer, 4 px patches, 4 layers of width 64, 4 heads, MLP 128",
        lambda: VisionTransformer(
            image_size=SIZE, patch_size=4, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128,
            num_classes=10,
        ),
        resize_rgb,
    ),
}  # fmt: skip
CONFIGS = {"paper default": {}, "burst + mse": dict(neuron="burst", threshold="mse")}


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(-1) == labels).double().mean().item() * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--time-steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/sit_blocks.json"))
    args = parser.parse_args()

    test_x, y = load_digits_split("test")
    train_x = load_digits_split("train")[0][:256]
    results = []
    for key in args.models:
        what, create, transform = MODELS[key]
        x, calibration = transform(test_x), transform(train_x)
        torch.manual_seed(0)
        start = time.perf_counter()
        model = train_on_digits(create(), transform)
        trained_s = time.perf_counter() - start
        with torch.inference_mode():
            ann = accuracy(model(x), y)
        blocks = len(block_paths(model))
        rows = []
        for config, options in CONFIGS.items():
            for method in ("ecmt", "sit"):
                for k in range(blocks + 1):
                    snn = transpike.convert(model, calibration, method=method, blocks=k, **options)
                    sums = snn.simulate(x, args.time_steps).cumsum(0)  # the argmax of the mean
                    rows.append(
                        dict(config=config, method=method, blocks=k, accuracy=[accuracy(o, y) for o in sums])
                    )
                    print(
                        key, config, method, k, " ".join(f"{a:.2f}" for a in rows[-1]["accuracy"]), flush=True
                    )
        results.append(dict(model=key, what=what, ann_accuracy=ann, train_seconds=trained_s, rows=rows))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            dict(
                size=SIZE,
                time_steps=args.time_steps,
                configs=CONFIGS,
                test_images=len(y),
                machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                torch=torch.__version__,
                results=results,
            ),
            indent=1,
        )
    )
    steps = (1, 2, 4, args.time_steps)
    for result in results:
        ann = result["ann_accuracy"]
        print(f"\n{result['model']} ({result['what']}): ANN {ann:.2f} % on {len(y)} test images")
        by = {(r["config"], r["method"], r["blocks"]): r["accuracy"] for r in result["rows"]}
        for config in CONFIGS:
            heads = [f"{m} t={t}" for m in ("ECMT", "SIT") for t in steps]
            print(f"\n{config}\n| blocks converted | " + " | ".join(heads) + " |")
            print("|---" * (1 + len(heads)) + "|")
            for k in sorted({r["blocks"] for r in result["rows"]}):
                cells = [f"{by[config, m, k][t - 1]:.2f}" for m in ("ecmt", "sit") for t in steps]
                print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
