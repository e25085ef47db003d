"""timm's vision towers of Qwen3-VL and DeepSeek-V4 as classifiers, with and without their VLM
projector (pixel unshuffle and MLP; DeepSeek's pads the grid): conversion, rate links,
``blocks=k``, save/load."""

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

#: name, timm model, its arguments beyond TINY; 16 px in patches of 4: a 4 × 4 grid, which
#: DeepSeek's aligner pads to 6 × 6 for its 3 × 3 unshuffle
VARIANTS = {
    "qwen3": ("qwen3_vit_88m", dict(pos_embed_grid_size=4)),
    "qwen3 merge": ("qwen3_vit_88m", dict(pos_embed_grid_size=4, encoder_pool="merge", out_features=20)),
    "deepseek": ("deepseek_vit_412m", dict(embed_dim=48)),
    "deepseek align": ("deepseek_vit_412m", dict(embed_dim=48, encoder_pool="align", out_features=20)),
}
#: what blocks=k leaves analog after the blocks: the projector (one module), the norms, the head
AFTER = {
    "qwen3 merge": ["encoder.merger", "norm", "head"],
    "deepseek align": ["encoder.norm", "encoder.aligner", "norm", "head"],
}


def kwargs(variant: str) -> dict:
    return {**TINY, **VARIANTS[variant][1]}


def build(variant: str) -> torch.nn.Module:
    """A small random-init tower whose blocks matter: attention and branches spread."""
    torch.manual_seed(0)
    model = timm.create_model(VARIANTS[variant][0], **kwargs(variant)).eval()
    return spread(model, ("attn.proj.weight", "mlp.fc2.weight", "head.weight"), scaled=("qkv.weight",))


@pytest.mark.parametrize("variant", VARIANTS)
def test_prepared_computes_what_timm_does(variant, images):
    assert_prepared_matches_in_float64(build(variant), images[1])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_towers_convert(variant, options, images):
    """The patch embedding's projection reads the image; Q·Kᵀ and attn·V in every block, and
    DeepSeek's SwiGLU gate."""
    products = 2 * (3 if variant.startswith("deepseek") else 2)
    assert_converts(build(variant), *images, options, direct="encoder.patch_embed.proj", products=products)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_module_passes_rates_like_increments(variant, images):
    """The residual stream as a ViT's, then each module after the blocks into the next."""
    assert_rates_up_to(build(variant), *images)


@pytest.mark.parametrize("variant", ["qwen3 merge", "deepseek align"])
def test_blocks_and_round_trip(variant, tmp_path, images):
    spec = {"timm": VARIANTS[variant][0], "kwargs": kwargs(variant)}
    analog = {k: [f"encoder.blocks.{i}" for i in range(k, 2)] + AFTER[variant] for k in (0, 1)}
    assert_blocks_and_round_trip(lambda: build(variant), images, analog, tmp_path / "net.safetensors", spec)


@pytest.mark.parametrize("name", ["qwen3_vit_88m_enc", "deepseek_vit_412m_enc"])
def test_the_encoders_convert(name, images):
    """The VLM encoders (``_enc``: the projector's tokens out, no classifier) convert as well."""
    kwargs = {**TINY, "num_classes": 0, "out_features": 20, "embed_dim": 48, "pos_embed_grid_size": 4}
    if name.startswith("deepseek"):
        del kwargs["pos_embed_grid_size"]
    torch.manual_seed(0)
    model = timm.create_model(name, **{k: v for k, v in kwargs.items() if k != "num_classes"}).eval()
    products = 2 * (3 if name.startswith("deepseek") else 2)
    assert_converts(model, *images, {}, direct="patch_embed.proj", products=products)
