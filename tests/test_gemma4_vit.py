"""timm's vision tower of Gemma 4 as a classifier: sandwich-norm blocks, q, k and v RMSNorms,
axial rotary embeddings, grouped-query heads, the gated MLP, clamping projections (finite bounds,
as Gemma 4 E4B's checkpoint sets), the encoder's soft-token pool with standardization;
conversion, rate links, ``blocks=k``, save/load, and NaFlex inputs refused."""

import pytest
import timm
import torch
from conftest import (
    CONFIGURATIONS,
    TINY,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    spread,
)

import transpike
from transpike.rules.timm_gemma4_vit import Clamp, PositionLookup

SMALL = dict(head_dim=8, intermediate_size=48, position_embedding_size=8, use_clipped_linears=False)
VARIANTS = {
    "plain": {},
    "clamped": dict(use_clipped_linears=True),
    "soft pool, grouped-query, standardized": dict(
        encoder_pool="soft", pooling_kernel_size=2, num_kv_heads=1, standardize=True
    ),
}


def kwargs(variant: str) -> dict:
    return {**TINY, **SMALL, **VARIANTS[variant]}


def build(variant: str) -> torch.nn.Module:
    """A small random-init tower whose blocks matter; clamps that bite (inputs to ±1.5, outputs
    to ±2) and a standardization that is not the identity."""
    torch.manual_seed(0)
    model = timm.create_model("gemma4_vit_167m", **kwargs(variant)).eval()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            bound = {"input_min": -1.5, "input_max": 1.5, "output_min": -2.0, "output_max": 2.0}
            if name.rsplit(".", 1)[-1] in bound:
                buffer.fill_(bound[name.rsplit(".", 1)[-1]])
            elif name.endswith(("std_bias", "std_scale")):
                buffer.copy_(torch.rand_like(buffer) + 0.5)
    drawn = ("o_proj.linear.weight", "down_proj.linear.weight", "head.weight")
    return spread(model, drawn, scaled=("q_proj.linear.weight", "k_proj.linear.weight"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_prepared_computes_what_timm_does(variant, images):
    prepared = assert_prepared_matches_in_float64(build(variant), images[1])
    clamps = sum(isinstance(module, Clamp) for module in prepared.modules())
    assert clamps == (2 * 7 * 2 if variant == "clamped" else 0)  # in and out of 7 projections, 2 blocks
    assert isinstance(prepared.encoder.patch_embed.position_lookup, PositionLookup)  # a constant


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_gemma4_converts(variant, options, images):
    """The patch projection reads the image; Q·Kᵀ, attn·V and the MLP's gate in every block."""
    direct = "encoder.patch_embed.input_proj"
    assert_converts(build(variant), *images, options, direct=direct, products=2 * 3, tolerance=0.2)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_module_passes_rates_like_increments(variant, images):
    """The stream (written by the sandwich norms after each branch, read by the norms before
    them), the branches' insides and the clamps, then the classifier's norm into the head."""
    assert_rates_up_to(build(variant), *images)


def test_blocks_and_round_trip(tmp_path, images):
    variant = "clamped"
    spec = {"timm": "gemma4_vit_167m", "kwargs": kwargs(variant)}
    analog = {k: [f"encoder.blocks.{i}" for i in range(k, 2)] + ["norm", "head"] for k in (0, 1)}
    assert_blocks_and_round_trip(lambda: build(variant), images, analog, tmp_path / "net.safetensors", spec)


def test_padded_patches_are_refused(images):
    """Padded patches would mask the attention: refused, saying so."""
    network = transpike.convert(build("plain"), images[0]).network
    patches = torch.rand(2, 16, 48)
    coord = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij"), -1).reshape(1, 16, 2)
    coord = coord.expand(2, -1, -1)
    valid = torch.ones(2, 16, dtype=torch.bool)
    valid[:, -4:] = False
    with pytest.raises(ValueError, match=r"Gemma 4 tower takes no padded patches"):
        network(patches, patch_coord=coord, patch_valid=valid)


def test_the_encoder_converts(images):
    """The VLM encoder (``_enc``: the soft-token pool's tokens out, clamping projections)."""
    torch.manual_seed(0)
    settings = {**kwargs("clamped"), "pooling_kernel_size": 2}
    del settings["num_classes"]
    model = timm.create_model("gemma4_vit_167m_enc", **settings).eval()
    assert_converts(model, *images, {}, direct="patch_embed.input_proj", products=2 * 3, tolerance=0.2)
