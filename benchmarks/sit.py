"""SIT-conversion: SI-exp and spiking-softmax error by K, and method="sit" against "ecmt".

1. SI-exp error on 10 000 evenly spaced points of [-1, 1] (the paper's fit) and of [-12, 0] (the
   fit used after subtracting the row maximum), for every shipped K: RMSE and MSE.
2. Spiking-softmax error against torch.softmax for each K. Protocol: 2 000 rows of 64 entries drawn
   i.i.d. uniform on [-1, 1] (seed 0), softmax over each row; reported: MSE over all entries, the
   largest absolute error, and the mean KL(softmax || spiking softmax) over rows; for the paper's
   form (inputs in [-1, 1], fit on [-1, 1]) and the shifted form (row maximum subtracted, fit on
   [-12, 0]); and the shifted form on rows 8 times wider (uniform on [-8, 8]), which the paper's
   form cannot take. Figure: benchmarks/out/sit_softmax.png (the paper's Fig. 7).
3. The digits ViT converted with method="sit" against "ecmt": top-1 after t = 1..8, and top-1
   after T = 8 as the number of converted blocks grows (the paper's Tables 2-4); the same for a
   random-init vit_tiny (relative L2 error of the logits).
4. Both networks with burst neurons (where SI-exp's own error shows), method="sit" for
   K = 12..32 against "ecmt": relative L2 error of the logits after t = 1, 4, 16.

    python benchmarks/sit.py
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import timm
import torch
from torch.utils.data import TensorDataset

import transpike
from transpike.digits import load_digits_split, trained_digits_vit
from transpike.evaluate import evaluate
from transpike.sit import SpikingSoftmax, fitted_parameters, fs_neuron, shipped_fits

STEPS = tuple(shipped_fits())
LONG = (12, 16, 20, 24, 28, 32)  # K compared in networks
BURST = dict(neuron="burst", threshold="mse")
OUT = Path("benchmarks/out")


def si_exp_errors() -> list[dict]:
    rows = []
    for k in STEPS:
        row = {"K": k}
        for key, (lo, hi) in (("paper", (-1.0, 1.0)), ("shifted", (-12.0, 0.0))):
            x = torch.linspace(lo, hi, 10_000, dtype=torch.float64)
            fit = fitted_parameters(k, shifted=key == "shifted")
            T, h, d = (torch.tensor(fit[n], dtype=torch.float64) for n in ("T", "h", "d"))
            squared = (fs_neuron(x, T, h, d) - x.exp()).square().mean().item()
            row[f"{key}_mse"], row[f"{key}_rmse"] = squared, squared**0.5
        rows.append(row)
    return rows


def softmax_errors() -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    narrow = torch.rand(2000, 64, generator=gen, dtype=torch.float64) * 2 - 1
    wide = narrow * 8
    rows = []
    for k in STEPS:
        row = {"K": k}
        for name, mode, x in (
            ("paper", "clip", narrow),
            ("shifted", "shift", narrow),
            ("shifted_wide", "shift", wide),
        ):
            exact = x.softmax(-1)
            spiking = SpikingSoftmax(-1, k, mode).double()(x)
            kl = (exact * (exact.log() - spiking.clamp(min=1e-12).log())).sum(-1).mean()
            row[name] = dict(mse=(spiking - exact).square().mean().item(),
                             max_abs=(spiking - exact).abs().max().item(), kl=kl.item())  # fmt: skip
        rows.append(row)
    return rows


def plot(softmax_rows: list[dict], si_rows: list[dict]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=120)
    ks = [r["K"] for r in si_rows]
    axes[0].semilogy(ks, [r["paper_rmse"] for r in si_rows], marker="o", label="SI-exp on [-1, 1]")
    axes[0].semilogy(ks, [r["shifted_rmse"] for r in si_rows], marker="s", label="SI-exp on [-12, 0]")
    axes[0].axhline(0.0015413, color="gray", linestyle="--", label="paper's figure (K=12)")
    axes[0].set(xlabel="K", ylabel="RMSE against exp", title="SI-exp")
    for name, marker in (("paper", "o"), ("shifted", "s"), ("shifted_wide", "^")):
        axes[1].semilogy(
            ks, [r[name]["mse"] for r in softmax_rows], marker=marker, label=name.replace("_", ", x8 ")
        )
    axes[1].axhline(0.013991, color="gray", linestyle="--", label="paper's MSE (K=12)")
    axes[1].set(xlabel="K", ylabel="MSE against softmax", title="Spiking softmax (rows of 64)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "sit_softmax.png")
    plt.close(fig)


def digits_comparison() -> dict:
    model = trained_digits_vit()
    x_train, _ = load_digits_split("train")
    test = TensorDataset(*load_digits_split("test"))
    out = {}
    for method in ("ecmt", "sit"):
        for config, options in (("default", {}), ("burst+mse", BURST)):
            runs = []
            for blocks in (0, 1, 2, 3, 4):
                snn = transpike.convert(model, x_train.split(256), method=method, blocks=blocks, **options)
                result = evaluate(snn, model, test, 8, batch_size=256, progress=False, energy=False)
                runs.append(dict(blocks=blocks, snn_top1=result["snn_top1"], ann_top1=result["ann_top1"]))
            out[f"{method} {config}"] = runs
            print(method, config, [round(r["snn_top1"][-1], 2) for r in runs], flush=True)
    return out


def random_vit(size: int = 64) -> tuple[torch.nn.Module, list[torch.Tensor], torch.Tensor]:
    """A random-init vit_tiny at ``size`` px, 4 calibration batches of 8 and a test batch (seeded)."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=size).eval()
    gen = torch.Generator().manual_seed(1)
    calibration = [torch.randn(8, 3, size, size, generator=gen) for _ in range(4)]
    return model, calibration, torch.randn(8, 3, size, size, generator=gen)


def logit_errors(snn: transpike.SpikingModel, x: torch.Tensor, ref: torch.Tensor) -> list[float]:
    """Relative L2 error of the SNN's logits after t = 1, 4, 16."""
    y = snn.simulate(x, 16)
    return [((y[t - 1] - ref).norm() / ref.norm()).item() for t in (1, 4, 16)]


def random_vit_comparison() -> dict:
    model, calibration, x = random_vit()
    with torch.inference_mode():
        ref = model(x)
    out = {}
    for method in ("ecmt", "sit"):
        for config, options in (
            ("mse+nearest", dict(threshold="mse", rounding="nearest")),
            ("burst+mse", BURST),
        ):
            runs = []
            for blocks in (0, 3, 6, 9, 12):
                snn = transpike.convert(model, calibration, method=method, blocks=blocks, **options)
                runs.append(dict(blocks=blocks, error=logit_errors(snn, x, ref)))
            out[f"{method} {config}"] = runs
            print(method, config, [[round(e, 3) for e in r["error"]] for r in runs], flush=True)
    return out


def steps_comparison() -> dict:
    """Logit error of both networks, burst neurons, ECMT and SIT for each K in ``LONG``."""
    digits = trained_digits_vit()
    x_train, _ = load_digits_split("train")
    x_test, _ = load_digits_split("test")
    vit, calibration, x = random_vit()
    out = {}
    for name, model, batches, inputs in (
        ("digits", digits, x_train.split(256), x_test),
        ("random vit_tiny", vit, calibration, x),
    ):
        with torch.inference_mode():
            ref = model(inputs)
        rows = [
            dict(method="ecmt", error=logit_errors(transpike.convert(model, batches, **BURST), inputs, ref))
        ]
        for k in LONG:
            snn = transpike.convert(model, batches, method="sit", sit_steps=k, **BURST)
            rows.append(dict(method="sit", K=k, error=logit_errors(snn, inputs, ref)))
        out[name] = rows
        print(name, [(r.get("K", "ecmt"), [round(e, 4) for e in r["error"]]) for r in rows], flush=True)
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    si_rows, softmax_rows = si_exp_errors(), softmax_errors()
    plot(softmax_rows, si_rows)
    print(
        "| K | SI-exp RMSE [-1,1] | MSE [-1,1] | RMSE [-12,0] | softmax MSE paper form | max abs | KL "
        "| shifted MSE | max abs | KL | shifted, x8 wide: MSE | max abs |"
    )
    print("|---" * 12 + "|")
    for si, sm in zip(si_rows, softmax_rows, strict=True):
        p, s, w = sm["paper"], sm["shifted"], sm["shifted_wide"]
        print(f"| {si['K']} | {si['paper_rmse']:.4g} | {si['paper_mse']:.3g} | {si['shifted_rmse']:.4g} | "
              f"{p['mse']:.3g} | {p['max_abs']:.3g} | {p['kl']:.3g} | {s['mse']:.3g} | {s['max_abs']:.3g} | "
              f"{s['kl']:.3g} | {w['mse']:.3g} | {w['max_abs']:.3g} |")  # fmt: skip
    digits, vit, by_steps = digits_comparison(), random_vit_comparison(), steps_comparison()
    machine = platform.processor() or platform.machine()
    result = dict(
        si_exp=si_rows, softmax=softmax_rows, digits=digits, random_vit_tiny_64px=vit, by_steps=by_steps,
        machine=machine, torch=torch.__version__,
    )  # fmt: skip
    (OUT / "sit.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
