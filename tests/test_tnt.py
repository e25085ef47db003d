"""timm's TNT: an inner Transformer over each patch's pixels and an outer one over the patches,
both sets handed from block to block as one tensor; the twin, conversion, rate links, ``blocks=k``
and save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    draw,
    random_images,
    spread,
)
from timm.models.tnt import TNT

from transpike.rules.timm_tnt import ExplicitTntAttention, JoinedTnt

#: at 32 px: 16 patches of 8 × 8 pixels, each seen as 2 × 2 inner pixels (a stride-4 convolution),
#: two blocks
TINY = dict(img_size=32, patch_size=8, embed_dim=24, inner_dim=8, depth=2, num_heads_inner=2)
TINY.update(num_heads_outer=2, num_classes=5)
VARIANTS = {"current": {}, "legacy": dict(legacy=True)}


def build(variant: str = "current") -> torch.nn.Module:
    """Position embeddings and the class token drawn (timm starts them near zero)."""
    torch.manual_seed(0)
    model = draw(TNT(**TINY, **VARIANTS[variant]).eval(), ("patch_pos", "pixel_pos", "cls_token"), 0.5)
    return spread(model, ("proj.weight", "fc2.weight", "head.weight"), scaled=("qk.weight",))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32, (16, 4))


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_twin_computes_what_timm_does(variant, inputs):
    prepared = assert_prepared_matches_in_float64(build(variant), inputs[1])
    assert isinstance(prepared, JoinedTnt)
    assert sum(isinstance(m, ExplicitTntAttention) for m in prepared.modules()) == 2 * 2


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_tnt_converts(variant, options, inputs):
    """The pixel embedding's convolution reads the image; two products in each inner and outer
    attention."""
    assert_converts(build(variant), *inputs, options, direct="pixel_embed.proj", products=2 * 2 * 2)


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build(), *inputs)


def test_blocks_and_round_trip(tmp_path, inputs):
    analog = {k: [f"blocks.{i}" for i in range(k, 2)] + ["norm", "head"] for k in (0, 1)}
    assert_blocks_and_round_trip(build, inputs, analog, tmp_path / "net.safetensors")
