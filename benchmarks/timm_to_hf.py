"""timm's random-init weights in the layout of transformers' classifier of the same architecture
(Swin V2: ``Swinv2ForImageClassification``; MobileViT: ``MobileViTForImageClassification``), so
that ``fidelity.py --checkpoint`` converts one function from both libraries and any difference left
is the conversion's, not the inits'.

The model is the one ``fidelity.py --model NAME --img-size SIZE`` builds (seed 0, zero-weight norms
at 1). Key by key; in both, timm's packed qkv splits into ``query``, ``key`` and ``value``. Swin V2:
q's and v's biases (k has none); each stage's leading patch merging in timm is the previous stage's
trailing one in transformers, and both concatenate the 2×2 neighbours in the same order. MobileViT:
timm's ByobNet stages are transformers' encoder layers, the inverted residual that opens a
MobileViT stage its downsampling layer. The script checks that the two models give the same logits
before it writes the file.

    python benchmarks/timm_to_hf.py --model swinv2_tiny_window8_256 --img-size 128 \\
        --out benchmarks/out/swinv2_tiny_hf.safetensors
    python benchmarks/timm_to_hf.py --model mobilevit_s --out benchmarks/out/mobilevit_s_hf.safetensors
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
from fidelity import create
from safetensors.torch import save_file

#: timm's names in a Swin V2 block and transformers' in its layer
BLOCK = {
    "attn.logit_scale": "attention.self.logit_scale",
    "attn.q_bias": "attention.self.query.bias",
    "attn.v_bias": "attention.self.value.bias",
    **{
        f"attn.cpb_mlp.{n}": f"attention.self.continuous_position_bias_mlp.{n}"
        for n in ("0.weight", "0.bias", "2.weight")
    },
    **{
        f"{timm_name}.{n}": f"{hf_name}.{n}"
        for timm_name, hf_name in (
            ("attn.proj", "attention.output.dense"),
            ("norm1", "layernorm_before"),
            ("norm2", "layernorm_after"),
            ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense"),
        )
        for n in ("weight", "bias")
    },
}


def swinv2_state(timm_state: dict[str, torch.Tensor], depths: list[int]) -> dict[str, torch.Tensor]:
    """transformers' state dict for the timm state dict of a Swin V2 of ``depths`` blocks per stage."""
    out = {
        "swinv2.embeddings.patch_embeddings.projection.weight": timm_state["patch_embed.proj.weight"],
        "swinv2.embeddings.patch_embeddings.projection.bias": timm_state["patch_embed.proj.bias"],
        "swinv2.embeddings.norm.weight": timm_state["patch_embed.norm.weight"],
        "swinv2.embeddings.norm.bias": timm_state["patch_embed.norm.bias"],
        "swinv2.layernorm.weight": timm_state["norm.weight"],
        "swinv2.layernorm.bias": timm_state["norm.bias"],
        "classifier.weight": timm_state["head.fc.weight"],
        "classifier.bias": timm_state["head.fc.bias"],
    }
    for stage, depth in enumerate(depths):
        for block in range(depth):
            source, target = (
                f"layers.{stage}.blocks.{block}.",
                f"swinv2.encoder.layers.{stage}.blocks.{block}.",
            )
            q, k, v = timm_state[source + "attn.qkv.weight"].chunk(3)
            for name, weight in (("query", q), ("key", k), ("value", v)):
                out[f"{target}attention.self.{name}.weight"] = weight
            out.update({target + hf: timm_state[source + timm] for timm, hf in BLOCK.items()})
        if stage > 0:  # timm merges at the start of a stage, transformers at the end of the one before
            for name in ("reduction.weight", "norm.weight", "norm.bias"):
                out[f"swinv2.encoder.layers.{stage - 1}.downsample.{name}"] = timm_state[
                    f"layers.{stage}.downsample.{name}"
                ]
    return {key: value.contiguous() for key, value in out.items()}


def swinv2_kwargs(timm_model: torch.nn.Module) -> dict:
    """transformers' configuration of timm's Swin V2."""
    return dict(
        embed_dim=timm_model.embed_dim,
        depths=[len(stage.blocks) for stage in timm_model.layers],
        num_heads=[stage.blocks[0].attn.num_heads for stage in timm_model.layers],
        window_size=timm_model.layers[0].blocks[0].window_size[0],
        num_labels=timm_model.num_classes,
    )


#: timm's MobileViT names (regular expressions, in this order) and transformers'
MOBILEVIT = (
    (r"^stem\.", "conv_stem."),
    (r"^stages\.([01])\.(\d+)\.", r"encoder.layer.\1.layer.\2."),
    (r"^stages\.(\d)\.0\.", r"encoder.layer.\1.downsampling_layer."),
    (r"^stages\.(\d)\.1\.transformer\.(\d+)\.", r"encoder.layer.\1.transformer.layer.\2."),
    (r"^stages\.(\d)\.1\.", r"encoder.layer.\1."),
    (r"^final_conv\.", "conv_1x1_exp."),
    (r"conv1_1x1\.", "expand_1x1."),
    (r"conv2_kxk\.", "conv_3x3."),
    (r"conv3_1x1\.", "reduce_1x1."),
    (r"conv_1x1\.weight", "conv_1x1.convolution.weight"),
    (r"conv_proj\.", "conv_projection."),
    (r"conv_fusion\.", "fusion."),
    (r"\.conv\.", ".convolution."),
    (r"\.bn\.", ".normalization."),
    (r"norm1\.", "layernorm_before."),
    (r"norm2\.", "layernorm_after."),
    (r"(\d)\.norm\.", r"\1.layernorm."),
    (r"attn\.proj\.", "attention.output.dense."),
    (r"mlp\.fc1\.", "intermediate.dense."),
    (r"mlp\.fc2\.", "output.dense."),
)


def mobilevit_state(timm_state: dict[str, torch.Tensor], _) -> dict[str, torch.Tensor]:
    """transformers' state dict for the timm state dict of a MobileViT."""
    out = {}
    for key, value in timm_state.items():
        if key.startswith("head.fc."):
            out[key.replace("head.fc.", "classifier.")] = value
            continue
        for pattern, replacement in MOBILEVIT:
            key = re.sub(pattern, replacement, key)
        if "attn.qkv." in key:  # one packed Linear in timm, three in transformers
            for name, part in zip(("query", "key", "value"), value.chunk(3), strict=True):
                out["mobilevit." + key.replace("attn.qkv.", f"attention.attention.{name}.")] = part
        else:
            out["mobilevit." + key] = value
    return {key: value.contiguous() for key, value in out.items()}


def mobilevit_kwargs(timm_model: torch.nn.Module) -> dict:
    """transformers' configuration of timm's MobileViT (v1: its widths from the weights)."""
    state = timm_model.state_dict()
    blocks = [state[f"stages.{s}.1.conv_1x1.weight"] for s in (2, 3, 4)]
    stems = [state["stem.conv.weight"], *(state[f"stages.{s}.{0}.conv3_1x1.conv.weight"] for s in range(5))]
    return dict(
        hidden_sizes=[weight.shape[0] for weight in blocks],
        neck_hidden_sizes=[weight.shape[0] for weight in stems] + [state["final_conv.conv.weight"].shape[0]],
        expand_ratio=state["stages.0.0.conv1_1x1.conv.weight"].shape[0] / state["stem.conv.weight"].shape[0],
        num_labels=timm_model.num_classes,
    )


#: architecture: (transformers' class, its configuration from timm's model, its state from timm's)
ARCHITECTURES = {
    "swinv2": ("Swinv2ForImageClassification", swinv2_kwargs, swinv2_state),
    "mobilevit": ("MobileViTForImageClassification", mobilevit_kwargs, mobilevit_state),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="swinv2_tiny_window8_256")
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    architecture = next((name for name in ARCHITECTURES if args.model.startswith(name)), None)
    if architecture is None:
        raise SystemExit(f"{args.model}: timm models of {', '.join(ARCHITECTURES)} only")
    hf_class, kwargs_of, state_of = ARCHITECTURES[architecture]
    torch.manual_seed(0)  # as fidelity.py
    timm_model = create(args.model, args.img_size, {})
    hf_kwargs = kwargs_of(timm_model)
    hf_model = create(f"hf:{hf_class}", args.img_size, hf_kwargs)
    state = state_of(timm_model.state_dict(), hf_kwargs.get("depths"))
    hf_model.load_state_dict(state)
    x = torch.randn(2, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = ((hf_model(x) - timm_model(x)).norm() / timm_model(x).norm()).item()
    if difference > 1e-5:
        raise SystemExit(f"the two models differ by {difference:.2e} (relative): not written")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, args.out)
    print(
        f"wrote {args.out}: transformers' {hf_class} with {args.model}'s weights "
        f"(logits equal to {difference:.1e} relative)"
    )
    print(
        f"python benchmarks/fidelity.py --model hf:{hf_class} --img-size {args.img_size} "
        f"--model-kwargs '{json.dumps(hf_kwargs)}' --checkpoint {args.out}"
    )


if __name__ == "__main__":
    main()
