"""timm's random-init weights in the layout of transformers' classifier of the same architecture
(Swin V2: ``Swinv2ForImageClassification``; MobileViT: ``MobileViTForImageClassification``;
FocalNet, Hiera: ``FocalNetForImageClassification``, ``HieraForImageClassification``; distilled
LeViT: ``LevitForImageClassificationWithTeacher``), so that
``fidelity.py --checkpoint`` converts one function from both libraries and any difference left is
the conversion's, not the inits'. (PoolFormer is not among them: timm's MetaFormer pools the last
map before its norm, a LayerNorm over the channels, where transformers, as the original, norms the
map with a GroupNorm first; the same weights give different functions.)

The model is the one ``fidelity.py --model NAME --img-size SIZE`` builds (seed 0, zero-weight norms
at 1). Key by key; in both, timm's packed qkv splits into ``query``, ``key`` and ``value``. Swin V2:
q's and v's biases (k has none); each stage's leading patch merging in timm is the previous stage's
trailing one in transformers, and both concatenate the 2×2 neighbours in the same order. MobileViT:
timm's ByobNet stages are transformers' encoder layers, the inverted residual that opens a
MobileViT stage its downsampling layer. FocalNet: as Swin V2's, timm's leading downsampling is
transformers' trailing patch embedding. Hiera: timm's one list of blocks is cut into transformers'
stages. LeViT: both keep the original's modules in its order, so the keys pair up one by one.
Where timm has a 1×1 convolution and transformers a Linear (FocalNet's modulation), the weight is
reshaped. The script checks that the two models give the same logits before it writes the file.

    python benchmarks/timm_to_hf.py --model swinv2_tiny_window8_256 --img-size 128 \\
        --out benchmarks/out/swinv2_tiny_hf.safetensors
    python benchmarks/timm_to_hf.py --model mobilevit_s --out benchmarks/out/mobilevit_s_hf.safetensors
    python benchmarks/timm_to_hf.py --model focalnet_tiny_srf --img-size 224 \\
        --out benchmarks/out/focalnet_tiny_srf_hf.safetensors
    python benchmarks/timm_to_hf.py --model hiera_tiny_224 --img-size 224 \\
        --out benchmarks/out/hiera_tiny_224_hf.safetensors
    python benchmarks/timm_to_hf.py --model levit_128s --img-size 224 --batchnorm-at-one \\
        --out benchmarks/out/levit_128s_hf.safetensors
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


def swinv2_state(timm_state: dict[str, torch.Tensor], hf_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """transformers' state dict for the timm state dict of a Swin V2."""
    depths = hf_model.config.depths
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


def renamed(state: dict[str, torch.Tensor], names: tuple[tuple[str, str], ...]) -> dict[str, torch.Tensor]:
    """``state`` with each key rewritten by ``names`` (regular expressions, in order)."""
    out = {}
    for key, value in state.items():
        for pattern, replacement in names:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


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
    for key, value in renamed(timm_state, MOBILEVIT).items():
        if key.startswith("head.fc."):
            out[key.replace("head.fc.", "classifier.")] = value
        elif "attn.qkv." in key:  # one packed Linear in timm, three in transformers
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


def focalnet_state(timm_state: dict[str, torch.Tensor], _) -> dict[str, torch.Tensor]:
    """transformers' state dict for the timm state dict of a FocalNet: timm's downsampling opening
    stage i is transformers' patch embedding closing stage i - 1."""
    shifted = {
        re.sub(r"^layers\.(\d)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", key): value
        for key, value in timm_state.items()
    }
    return renamed(shifted, FOCALNET)


#: timm's FocalNet names and transformers'
FOCALNET = (
    (r"^stem\.proj\.", "focalnet.embeddings.patch_embeddings.projection."),
    (r"^stem\.norm\.", "focalnet.embeddings.norm."),
    (r"^layers\.(\d)\.blocks\.(\d+)\.", r"focalnet.encoder.stages.\1.layers.\2."),
    (r"^layers\.(\d)\.downsample\.proj\.", r"focalnet.encoder.stages.\1.downsample.projection."),
    (r"^layers\.(\d)\.downsample\.", r"focalnet.encoder.stages.\1.downsample."),
    (r"modulation\.f\.", "modulation.projection_in."),
    (r"modulation\.h\.", "modulation.projection_context."),
    (r"modulation\.proj\.", "modulation.projection_out."),
    (r"modulation\.norm\.", "modulation.layernorm."),
    (r"^norm\.", "focalnet.layernorm."),
    (r"^head\.fc\.", "classifier."),
)


def focalnet_kwargs(timm_model: torch.nn.Module) -> dict:
    """transformers' configuration of timm's FocalNet."""
    modulations = [stage.blocks[0].modulation for stage in timm_model.layers]
    return dict(
        embed_dim=timm_model.layers[0].blocks[0].dim,
        depths=[len(stage.blocks) for stage in timm_model.layers],
        focal_levels=[m.focal_level for m in modulations],
        focal_windows=[m.focal_layers[0][0].kernel_size[0] for m in modulations],
        num_labels=timm_model.num_classes,
    )


def hiera_state(timm_state: dict[str, torch.Tensor], hf_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """transformers' state dict for the timm state dict of a Hiera: timm's list of blocks cut into
    stages."""
    depths = hf_model.config.depths
    stage_of = [(stage, layer) for stage, depth in enumerate(depths) for layer in range(depth)]
    layer = lambda m: "hiera.encoder.stages.{}.layers.{}.".format(*stage_of[int(m[1])])  # noqa: E731
    staged = {re.sub(r"^blocks\.(\d+)\.", layer, key): value for key, value in timm_state.items()}
    return renamed(staged, HIERA)


#: timm's Hiera names and transformers'
HIERA = (
    (r"^pos_embed$", "hiera.embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.", "hiera.embeddings.patch_embeddings.projection."),
    (r"norm1\.", "layernorm_before."),
    (r"norm2\.", "layernorm_after."),
    (r"^head\.norm\.", "hiera.pooler.layernorm."),
    (r"^head\.fc\.", "classifier."),
)


def hiera_kwargs(timm_model: torch.nn.Module) -> dict:
    """transformers' configuration of timm's Hiera (its stages where q is pooled)."""
    ends = [index for index, block in enumerate(timm_model.blocks) if block.dim != block.dim_out] + [
        len(timm_model.blocks)
    ]
    depths = [b - a for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    starts = [0, *ends[:-1]]
    return dict(
        image_size=[timm_model.patch_embed.proj.stride[0] * timm_model.tokens_spatial_shape[0]] * 2,
        embed_dim=timm_model.blocks[0].dim,
        depths=depths,
        num_heads=[timm_model.blocks[start].attn.heads for start in starts],
        num_labels=timm_model.num_classes,
    )


def levit_state(timm_state: dict[str, torch.Tensor], hf_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """transformers' state dict for the timm state dict of a LeViT: both keep the original's modules
    in its order (stem, each stage's blocks, the subsampling between stages, the two heads), so the
    keys pair up one by one; the shapes are checked."""
    hf_state = hf_model.state_dict()
    for (timm_key, value), (key, target) in zip(timm_state.items(), hf_state.items(), strict=True):
        if value.shape != target.shape:
            raise SystemExit(
                f"{timm_key} {tuple(value.shape)} and {key} {tuple(target.shape)} do not pair up"
            )
    return dict(zip(hf_state, timm_state.values(), strict=True))


def levit_kwargs(timm_model: torch.nn.Module) -> dict:
    """transformers' configuration of timm's LeViT (distilled: two heads)."""
    attns = [stage.blocks[0].attn for stage in timm_model.stages]
    mlps = [stage.blocks[0].mlp.ln1.linear for stage in timm_model.stages]
    return dict(
        hidden_sizes=list(timm_model.embed_dim),
        num_attention_heads=[attn.num_heads for attn in attns],
        depths=[len(stage.blocks) for stage in timm_model.stages],
        key_dim=[attn.key_dim for attn in attns],
        attention_ratio=[attn.val_dim // attn.key_dim for attn in attns],
        mlp_ratio=[mlp.out_features // mlp.in_features for mlp in mlps],
        num_labels=timm_model.num_classes,
    )


#: architecture: (transformers' class, its configuration from timm's model, its state from timm's)
ARCHITECTURES = {
    "swinv2": ("Swinv2ForImageClassification", swinv2_kwargs, swinv2_state),
    "mobilevit": ("MobileViTForImageClassification", mobilevit_kwargs, mobilevit_state),
    "focalnet": ("FocalNetForImageClassification", focalnet_kwargs, focalnet_state),
    "hiera_": ("HieraForImageClassification", hiera_kwargs, hiera_state),
    "levit_": ("LevitForImageClassificationWithTeacher", levit_kwargs, levit_state),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="swinv2_tiny_window8_256")
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batchnorm-at-one", action="store_true", help="as fidelity.py's (LeViT)")
    args = parser.parse_args()
    architecture = next((name for name in ARCHITECTURES if args.model.startswith(name)), None)
    if architecture is None:
        raise SystemExit(f"{args.model}: timm models of {', '.join(ARCHITECTURES)} only")
    hf_class, kwargs_of, state_of = ARCHITECTURES[architecture]
    torch.manual_seed(0)  # as fidelity.py
    timm_model = create(args.model, args.img_size, {}, args.batchnorm_at_one)
    hf_kwargs = kwargs_of(timm_model)
    hf_model = create(f"hf:{hf_class}", args.img_size, hf_kwargs)
    state = state_of(timm_model.state_dict(), hf_model)
    shapes = {key: value.shape for key, value in hf_model.state_dict().items()}
    state = {key: value.reshape(shapes.get(key, value.shape)) for key, value in state.items()}  # 1×1 convs
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
