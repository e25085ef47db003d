"""Fidelity and energy on a random-init timm ViT: SNN logits against the ANN's, by time step.

Random-init timm model (vit_tiny_patch16_224 by default) at 224 px, calibrated on a few batches of
random images and evaluated on another batch. Per configuration and t: the relative L2 error of the
mean logits against the ANN, the share of images whose top-1 class agrees with the ANN's, and the
SNN/ANN energy (ECMT's form: synaptic ACs only; and the full form with the analog float work), with
the largest number of spikes one neuron emits in one step, since equal T is not equal work.

    python benchmarks/fidelity.py [--model vit_tiny_patch16_224] [--configs default mse+nearest ...]
        [--model-kwargs '{"ls_init_value": 1.0}']

Models whose constructor takes no ``img_size`` (convolutional hybrids: EdgeNeXt, Next-ViT) run at
any size without it. Norms that timm initializes with zero weights (Swin V2's residual post-norms,
which make every block the identity until trained) start at weight 1 instead. torchvision's ViTs:
``--model torchvision:vit_b_16``, or ``--model torchvision:VisionTransformer`` with its shape in
``--model-kwargs``; their zero-initialized head gets timm's head init. Hugging Face transformers'
classifiers: ``--model hf:ViTForImageClassification`` (or DeiT's, DINOv2's) with their configuration
in ``--model-kwargs``. ``--checkpoint FILE`` loads weights into the model (after the init above), as
``benchmarks/timm_to_hf.py`` writes timm's Swin V2 and MobileViT weights in transformers' layout.
``--fill SUFFIX=VALUE`` starts the parameters whose names end in SUFFIX at VALUE.
``--batchnorm-stats`` measures every BatchNorm's statistics on the calibration images, as training
would leave them (see :func:`measure_batchnorms`).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import timm
import torch
import torchvision

import transpike
from transpike.models import create_model, load_checkpoint

STEPS = (1, 2, 4, 8, 16)
CONFIGS = {
    "default": {},
    "nearest": dict(rounding="nearest"),
    "mse": dict(threshold="mse"),
    "mse+nearest": dict(threshold="mse", rounding="nearest"),
    "mse+nearest+channel": dict(threshold="mse", rounding="nearest", granularity="channel"),
    "octave4": dict(levels_per_octave=4),
    "nearest+octave4": dict(rounding="nearest", levels_per_octave=4),
    "mse+octave4": dict(threshold="mse", levels_per_octave=4),
    "mse+nearest+octave2": dict(threshold="mse", rounding="nearest", levels_per_octave=2),
    "mse+nearest+octave4": dict(threshold="mse", rounding="nearest", levels_per_octave=4),
    "mse+nearest+octave8": dict(threshold="mse", rounding="nearest", levels_per_octave=8),
    "levels=1": dict(levels=1),
    "no-ec": dict(compensation=False),
    "burst+mse": dict(neuron="burst", threshold="mse"),
    "sit": dict(method="sit"),
    "sit+burst+mse": dict(method="sit", neuron="burst", threshold="mse"),
    "sit28+burst+mse": dict(method="sit", neuron="burst", threshold="mse", sit_steps=28),
    "w8": dict(weight_bits=8),
    "w4": dict(weight_bits=4),
    "burst+mse+w8": dict(neuron="burst", threshold="mse", weight_bits=8),
    "burst+mse+w6": dict(neuron="burst", threshold="mse", weight_bits=6),
    "burst+mse+w4": dict(neuron="burst", threshold="mse", weight_bits=4),
    "burst+mse+w8-layer": dict(neuron="burst", threshold="mse", weight_bits=8, weight_granularity="tensor"),
    "burst+mse+w6-mse": dict(neuron="burst", threshold="mse", weight_bits=6, weight_scale="mse"),
    "burst+mse+w4-mse": dict(neuron="burst", threshold="mse", weight_bits=4, weight_scale="mse"),
}


def create(name: str, img_size: int, kwargs: dict, batchnorm_at_one: bool = False) -> torch.nn.Module:
    """The random-init model for img_size: timm's ViTs take the size as an argument, hybrids of
    convolutions and attention (EdgeNeXt, Next-ViT) any size as it is; ``torchvision:NAME`` is
    torchvision's model, ``hf:CLASS`` a transformers classifier (its configuration in ``kwargs``),
    ``torchvision:VisionTransformer`` its ViT class at any shape (ViT-Tiny's:
    ``{"patch_size": 16, "num_layers": 12, "num_heads": 3, "hidden_dim": 192, "mlp_dim": 768}``).
    Zero-weight norms start at 1 (BatchNorms too with ``batchnorm_at_one``: LeViT ends every
    residual branch in one) and zero-weight heads (torchvision's) at timm's head init."""
    if name == "torchvision:VisionTransformer":
        model = torchvision.models.VisionTransformer(image_size=img_size, **kwargs).eval()
    elif name.startswith("hf:"):  # a transformers classifier, its configuration in kwargs
        model = create_model(name, {"image_size": img_size, **kwargs})
    elif name.startswith("torchvision:"):
        try:
            model = create_model(name, {"image_size": img_size, **kwargs})
        except ValueError:  # a Swin takes any size
            model = create_model(name, kwargs)
    else:
        try:
            model = timm.create_model(name, img_size=img_size, **kwargs).eval()
        except TypeError:
            model = timm.create_model(name, **kwargs).eval()
    norms = (torch.nn.LayerNorm, *((torch.nn.BatchNorm1d, torch.nn.BatchNorm2d) if batchnorm_at_one else ()))
    with torch.no_grad():
        for module in model.modules():
            zero = getattr(module, "weight", None) is not None and not module.weight.any()
            if isinstance(module, norms) and zero:
                module.weight.fill_(1.0)
            if isinstance(module, torch.nn.Linear) and zero:
                torch.nn.init.trunc_normal_(module.weight, std=0.02)
    return model


def fill(model: torch.nn.Module, items: list[str]) -> dict[str, str]:
    """``--fill``: parameters whose names end in SUFFIX start at VALUE, for each SUFFIX=VALUE."""
    fills = dict(item.split("=", 1) for item in items)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            for suffix, value in fills.items():
                if name.endswith(suffix):
                    parameter.fill_(float(value))
    return fills


def measure_batchnorms(model: torch.nn.Module, images: list[torch.Tensor]) -> None:
    """Each BatchNorm's running statistics measured on ``images`` (a cumulative average over the
    batches, the BatchNorms normalizing by their batch's statistics meanwhile), as training leaves
    them. At random init they are (0, 1) and do not normalize: in a network of residual branches
    that end in BatchNorms of weight 1 the activations grow block by block (logits of 10^5 in
    LambdaNet-26), which no trained network has."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    with torch.no_grad():
        for batch in images:
            model(batch)
    for norm in norms:
        norm.momentum = 0.1
        norm.eval()


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that choose the model, its init and its data (shared with trace.py)."""
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--calib-batches", type=int, default=4)
    parser.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON, for timm.create_model")
    parser.add_argument("--batchnorm-at-one", action="store_true", help="zero-weight BatchNorms start at 1")
    parser.add_argument(
        "--batchnorm-stats",
        action="store_true",
        help="BatchNorm statistics measured on the calibration images",
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="weights to load (safetensors, or torch read weights only)"
    )
    parser.add_argument(
        "--fill", nargs="+", default=[], metavar="SUFFIX=VALUE",
        help="parameters whose names end in SUFFIX start at VALUE (e.g. Gemma 4's q_norm.weight=0.354: "
        "norms of q and k with unit gains and scores unscaled saturate a random-init softmax)",
    )  # fmt: skip


def setup(args: argparse.Namespace) -> tuple[torch.nn.Module, list[torch.Tensor], torch.Tensor, dict]:
    """The model (seed 0), its calibration batches and evaluation batch (seed 1) and its fills."""
    torch.manual_seed(0)
    model = create(args.model, args.img_size, args.model_kwargs, args.batchnorm_at_one)
    if args.checkpoint is not None:
        load_checkpoint(model, args.checkpoint)
    fills = fill(model, args.fill)
    gen = torch.Generator().manual_seed(1)
    shape = (args.batch, 3, args.img_size, args.img_size)
    calibration = [torch.randn(shape, generator=gen) for _ in range(args.calib_batches)]
    x = torch.randn(shape, generator=gen)
    if args.batchnorm_stats:
        measure_batchnorms(model, calibration)
    return model, calibration, x, fills


def measure(model: torch.nn.Module, calibration: list[torch.Tensor], x: torch.Tensor, name: str) -> tuple:
    """One configuration of :data:`CONFIGS` converted and run for max(STEPS) steps on ``x``: its row
    (error and top-1 agreement against the ANN, energy, spikes per neuron) and its energy report."""
    with torch.inference_mode():
        ref = model(x)
    start = time.perf_counter()
    snn = transpike.convert(model, calibration, **CONFIGS[name])
    outputs = []
    hook = snn.network.register_forward_hook(lambda m, i, o, outputs=outputs: outputs.append(o.double()))
    report = transpike.account(snn, x, max(STEPS))
    hook.remove()
    y = torch.stack(outputs[-max(STEPS) :]).cumsum(0) / torch.arange(1, max(STEPS) + 1).view(-1, 1, 1)
    row = dict(
        config=name,
        options=CONFIGS[name],
        error={t: ((y[t - 1] - ref).norm() / ref.norm()).item() for t in STEPS},
        agreement={t: (y[t - 1].argmax(-1) == ref.argmax(-1)).double().mean().item() * 100 for t in STEPS},
        energy_ecmt={t: report.ratio["ecmt"][t - 1] for t in STEPS},
        energy_full={t: report.ratio["full"][t - 1] for t in STEPS},
        max_spikes_per_neuron_step=report.max_spikes_per_neuron_step,
        spikes_per_neuron_step=sum(sum(s["firing_rate"]) * s["neurons"] for s in report.sites)
        / sum(s["neurons"] for s in report.sites)
        / max(STEPS),
        seconds=time.perf_counter() - start,
    )
    print(f"{name}: " + " ".join(f"{e:.3f}" for e in row["error"].values()), flush=True)
    return row, report


def print_table(title: str, rows: list[dict]) -> None:
    """The rows as BENCHMARKS.md's table."""
    head = "/".join(map(str, STEPS))
    print(f"\n{title}: relative L2 error of the mean logits / top-1 agreement (%) / energy SNN/ANN "
          "(ECMT form, full form)\n")  # fmt: skip
    print(
        f"| configuration | error t={head} | agreement t=1, 4, 16 | energy ECMT t=1, 4, 16 "
        "| energy full t=1, 4, 16 | max spikes/neuron/step | spikes/neuron/step |"
    )
    print("|---" * 7 + "|")
    for r in rows:
        pick = (1, 4, 16)
        print(
            f"| {r['config']} | " + " / ".join(f"{r['error'][t]:.3f}" for t in STEPS)
            + " | " + " / ".join(f"{r['agreement'][t]:.0f}" for t in pick)
            + " | " + " / ".join(f"{r['energy_ecmt'][t]:.2f}" for t in pick)
            + " | " + " / ".join(f"{r['energy_full'][t]:.2f}" for t in pick)
            + f" | {r['max_spikes_per_neuron_step']} | {r['spikes_per_neuron_step']:.2f} |"
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or Path(f"benchmarks/out/fidelity-{args.model}.json")
    model, calibration, x, fills = setup(args)
    measured = [measure(model, calibration, x, name) for name in args.configs]
    rows, report = [row for row, _ in measured], measured[-1][1]
    result = dict(
        model=args.model,
        model_kwargs=args.model_kwargs,
        fill=fills,
        batchnorm_at_one=args.batchnorm_at_one,
        batchnorm_stats=args.batchnorm_stats,
        img_size=args.img_size,
        batch=args.batch,
        calib_batches=args.calib_batches,
        ann_macs_per_image=report.ann_macs,
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        torch=torch.__version__,
        rows=rows,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print_table(args.model, rows)


if __name__ == "__main__":
    main()
