"""timm's NaFlexVit on image batches: linear or convolutional patch embeddings with learned,
factorized or no position embeddings (the embedding is the input), ViT blocks or EVA blocks with
rotary embeddings (axial, mixed, DINOv3's, MRoPE), SwiGLU, gated and grouped-query attention,
every pool; conversion, rate links, ``blocks=k``, save/load, and NaFlex mode refused."""

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
from transpike.rules.timm_naflexvit import ImageNaFlexVit
from transpike.rules.timm_twins import TokenPool

VARIANTS = {
    "attention pool": dict(global_pool="map"),
    "class token, convolution, pre-norm": dict(
        class_token=True, global_pool="token", embed_proj_type="conv", pre_norm=True
    ),
    "max pool, registers": dict(global_pool="max", reg_tokens=2),
    "avg-max pool with the prefix": dict(global_pool="avgmax", class_token=True, pool_include_prefix=True),
    "factorized, embedding norm": dict(
        pos_embed="factorized", embed_norm_layer="layernorm", global_pool="avg"
    ),
    "axial rope, SwiGLU": dict(rope_type="axial", swiglu_mlp=True, global_pool="avg"),
    "mixed rope": dict(rope_type="mixed", global_pool="avg"),
    "DINOv3 rope, gated, grouped-query": dict(
        rope_type="dinov3",
        rope_rotate_half=True,
        attn_gated=True,
        num_kv_heads=1,
        qkv_fused=False,
        global_pool="avg",
    ),
    "MRoPE": dict(rope_type="mrope", rope_mrope_section=(0, 2, 2), global_pool="avg"),
}
#: the variants converted in full: one per pool, embedding and block kind
CONVERTED = [
    "attention pool",
    "class token, convolution, pre-norm",
    "max pool, registers",
    "axial rope, SwiGLU",
]


def build(variant: str) -> torch.nn.Module:
    """A small random-init NaFlexVit (16 px, 16 patches of 4 px, a 4×4 position grid) whose blocks
    matter: LayerScale 0.5, attention and branches spread."""
    torch.manual_seed(0)
    kwargs = dict(**TINY, pos_embed_grid_size=(4, 4), init_values=0.5, **VARIANTS[variant])
    model = timm.create_model("naflexvit_base_patch16_gap", **kwargs).eval()
    drawn = ("attn.proj.weight", "mlp.fc2.weight", "mlp.w3.weight", "head.weight")
    return spread(model, drawn, scaled=("qkv.weight", "q_proj.weight", "k_proj.weight"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_prepared_computes_what_timm_does(variant, images):
    prepared = assert_prepared_matches_in_float64(build(variant), images[1])
    assert isinstance(prepared, ImageNaFlexVit)
    assert isinstance(getattr(prepared, "token_pool", None), TokenPool) == (
        "max" in VARIANTS[variant]["global_pool"]
    )


@pytest.mark.parametrize("variant", CONVERTED)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_naflexvit_converts(variant, options, images):
    """The embedding's projection reads the image; two products per block (three with SwiGLU's
    gate), two more in the attention pool."""
    products = 2 * 2 + {"attention pool": 2, "axial rope, SwiGLU": 2}.get(variant, 0)
    assert_converts(build(variant), *images, options, direct="embeds.proj", products=products)


@pytest.mark.parametrize("variant", CONVERTED[1:])
def test_every_module_passes_rates_like_increments(variant, images):
    """The blocks, norms and pools are a ViT's: the stream, the norms and the pool pass rates (an
    attention pool's output is a sum, as in a ViT: not here)."""
    assert_rates_up_to(build(variant), *images)


def test_naflex_mode_is_refused(images):
    """Patches with coordinates and validity masks mask the attention: refused, saying so."""
    network = transpike.convert(build("max pool, registers"), images[0]).network
    patches = torch.randn(2, 16, 48)
    coord = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij"), -1).reshape(1, 16, 2)
    with pytest.raises(ValueError, match=r"NaFlexVit takes image batches.*patch_coord"):
        network({"patches": patches, "patch_coord": coord.expand(2, -1, -1)})
    with pytest.raises(ValueError, match="NaFlex mode"):
        network(patches, patch_coord=coord.expand(2, -1, -1), patch_valid=torch.ones(2, 16, dtype=torch.bool))


def test_blocks_and_round_trip(tmp_path, images):
    variant = "max pool, registers"
    after = ["fc_norm", "head"]  # the pool, a module only once prepared, is an EC module either way
    kwargs = {**TINY, "pos_embed_grid_size": (4, 4), "init_values": 0.5, **VARIANTS[variant]}
    spec = {"timm": "naflexvit_base_patch16_gap", "kwargs": kwargs}
    assert_blocks_and_round_trip(
        lambda: build(variant),
        images,
        {k: [f"blocks.{i}" for i in range(k, 2)] + after for k in (0, 1)},
        tmp_path / "net.safetensors",
        spec,
    )
