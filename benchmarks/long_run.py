"""Long runs: does the rate estimate keep converging for T up to 1024, and does memory stay flat?

For the digits ViT (the first 256 test images) and a random-init vit_tiny at 64 px (batch 8),
converted with the paper's defaults: the relative L2 error of the mean logits against the ANN after
t = 1, 4, 16, 64, 256, 1024 steps, simulated in float32 and, for the same conversion in float64,
as the drift-free reference; the digits top-1 at those t; and the peak resident memory of
``simulate`` for T = 64 against T = 1024, each measured in a fresh process.

    python benchmarks/long_run.py
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import timm
import torch
from memory import in_fresh_process, peak_growth_mib

import transpike
from transpike.digits import load_digits_split, trained_digits_vit

T = 1024
CHECKPOINTS = (1, 4, 16, 64, 256, 1024)
DIGITS = 256  # test images: 1024 steps of all 719 take about 10 minutes on 2 cores
OUT = Path("benchmarks/out/long_run.json")


def setup(name: str) -> tuple[torch.nn.Module, list[torch.Tensor], torch.Tensor]:
    """The ANN, its calibration batches and the evaluation inputs."""
    if name == "digits":
        model = trained_digits_vit()
        return model, list(load_digits_split("train")[0].split(256)), load_digits_split("test")[0][:DIGITS]
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=64).eval()
    gen = torch.Generator().manual_seed(1)
    calibration = [torch.randn(8, 3, 64, 64, generator=gen) for _ in range(4)]
    return model, calibration, torch.randn(8, 3, 64, 64, generator=gen)


def errors(name: str) -> dict:
    model, calibration, x = setup(name)
    row = {}
    for dtype in (torch.float32, torch.float64):
        ann = model.to(dtype)
        with torch.inference_mode():
            ref = ann(x.to(dtype))
        y = transpike.convert(ann, [c.to(dtype) for c in calibration]).simulate(x.to(dtype), T)
        key = str(dtype).removeprefix("torch.")
        row[key] = [((y[t - 1] - ref).norm() / ref.norm()).item() for t in CHECKPOINTS]
        if name == "digits":
            labels = load_digits_split("test")[1][:DIGITS]
            correct = (y.argmax(-1) == labels).double().mean(-1) * 100
            row[key + "_top1"] = [correct[t - 1].item() for t in CHECKPOINTS]
    return row


def measure_peak(name: str, steps: int) -> dict:
    """In a fresh process: peak RSS growth (MiB) during simulate(x, steps), and the state size."""
    model, calibration, x = setup(name)
    snn = transpike.convert(model, calibration)
    with torch.inference_mode():
        peak_mib = peak_growth_mib(lambda: snn.simulate(x, steps))
    return dict(peak_mib=peak_mib, state_mib=snn.state_bytes() / 2**20)


def peak(name: str, steps: int) -> dict:
    return in_fresh_process("long_run", f"measure_peak({name!r}, {steps})")


def main() -> None:
    result = dict(checkpoints=CHECKPOINTS, machine=platform.processor() or platform.machine(), rows=[])
    for name in ("digits", "vit_tiny_64px"):
        row = dict(model=name, **errors(name))
        result["rows"].append(row)
        print(row, flush=True)
        result[f"memory {name}"] = {steps: peak(name, steps) for steps in (64, T)}
        print(result[f"memory {name}"], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))
    print("\n| model | precision | " + " | ".join(f"t={t}" for t in CHECKPOINTS) + " |")
    print("|---" * (2 + len(CHECKPOINTS)) + "|")
    for row in result["rows"]:
        for key in ("float32", "float64", "float32_top1"):
            if key in row:
                cells = " | ".join(f"{v:.4g}" for v in row[key])
                print(f"| {row['model']} | {key} | {cells} |")


if __name__ == "__main__":
    main()
