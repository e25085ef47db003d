"""timm's random-init Swin V2 weights in the layout of transformers' ``Swinv2ForImageClassification``,
so that ``fidelity.py --checkpoint`` converts one function from both libraries and any difference
left is the conversion's, not the inits'.

The model is the one ``fidelity.py --model NAME --img-size SIZE`` builds (seed 0, zero-weight norms
at 1). Key by key: the packed qkv splits into ``query``, ``key`` and ``value`` (q's and v's biases;
k has none), each stage's leading patch merging in timm is the previous stage's trailing one in
transformers, and both concatenate the 2×2 neighbours in the same order. The script checks that
the two models give the same logits before it writes the file.

    python benchmarks/timm_to_hf_swinv2.py --model swinv2_tiny_window8_256 --img-size 128 \\
        --out benchmarks/out/swinv2_tiny_hf.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from fidelity import create
from safetensors.torch import save_file

#: timm's names in a block and transformers' in its layer
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


def hf_state(timm_state: dict[str, torch.Tensor], depths: list[int]) -> dict[str, torch.Tensor]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="swinv2_tiny_window8_256")
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(0)  # as fidelity.py
    timm_model = create(args.model, args.img_size, {})
    window = timm_model.layers[0].blocks[0].window_size[0]
    hf_kwargs = dict(
        embed_dim=timm_model.embed_dim,
        depths=[len(stage.blocks) for stage in timm_model.layers],
        num_heads=[stage.blocks[0].attn.num_heads for stage in timm_model.layers],
        window_size=window,
        num_labels=timm_model.num_classes,
    )
    hf_model = create("hf:Swinv2ForImageClassification", args.img_size, hf_kwargs)
    state = hf_state(timm_model.state_dict(), hf_kwargs["depths"])
    hf_model.load_state_dict(state)
    x = torch.randn(2, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = ((hf_model(x) - timm_model(x)).norm() / timm_model(x).norm()).item()
    if difference > 1e-5:
        raise SystemExit(f"the two models differ by {difference:.2e} (relative): not written")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, args.out)
    print(
        f"wrote {args.out}: transformers' Swinv2 with {args.model}'s weights "
        f"(logits equal to {difference:.1e} relative)"
    )
    print(
        f"python benchmarks/fidelity.py --model hf:Swinv2ForImageClassification --img-size {args.img_size} "
        f"--model-kwargs '{json.dumps(hf_kwargs)}' --checkpoint {args.out}"
    )


if __name__ == "__main__":
    main()
