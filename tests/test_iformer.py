"""timm's iFormer: single-head modulation attention (gated, on the map's pixels), convolution
blocks, FFNs and conditional position encodings with BatchNorm, LayerScale, the BatchNorm-Linear
head, distilled or not, in training form or fused; the twin (windows too), conversion, the one
rate link, ``blocks=k`` and save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    assert_twin_matches,
    random_images,
)
from timm.models.iformer import SHMA, IFormer

from transpike.rules.timm_iformer import ExplicitSHMA

#: 32 px images: an 8×8 map with a convolution block, then a 4×4 one with a position encoding, an
#: attention block, an FFN and a convolution block
SMALL = dict(dims=(8, 16), depths=(1, 4), attn_groups=(0, 1), attn_head_dim_reduction=(0, 2), num_classes=5)
VARIANTS = {
    "training form": dict(),
    "distilled, LayerScale": dict(distillation=True, layer_scale_init_value=0.5),
    "fused": dict(layer_scale_init_value=0.5),
}


def build(variant: str) -> torch.nn.Module:
    """A small random-init iFormer whose BatchNorms are not the identity (weights and running
    statistics drawn), fused by timm for the fused variant."""
    torch.manual_seed(0)
    model = IFormer(**SMALL, **VARIANTS[variant]).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.weight.uniform_(0.5, 1.5)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    return model.fuse() if variant == "fused" else model


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_twin_computes_what_timm_does(variant, inputs):
    assert_twin_matches(build(variant), inputs[1], SHMA, ExplicitSHMA, 1)
    assert_prepared_matches_in_float64(build(variant), inputs[1])


def test_the_twin_attends_in_padded_windows():
    """timm's registered models attend globally; SHMA's windows (zero-padded) are twinned too."""
    torch.manual_seed(0)
    attn = SHMA(16, window_size=3).eval()
    x = torch.randn(2, 16, 7, 8)
    with torch.no_grad():
        assert torch.allclose(ExplicitSHMA(attn)(x), attn(x), atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_iformer_converts(variant, options, inputs):
    """The stem's first convolution reads the image; Q·Kᵀ, attn·V and the gate are products."""
    direct = "stem.conv1" if variant == "fused" else "stem.conv1.c"
    assert_converts(build(variant), *inputs, options, direct=direct, products=3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_module_passes_rates_like_increments(variant, inputs):
    """One link from the stem to the head's Linears."""
    outputs = {
        "training form": ("head.head.l",),
        "distilled, LayerScale": ("head.head.l", "head.head_dist.l"),
    }
    assert_rates_up_to(build(variant), *inputs, outputs=outputs.get(variant, ("head",)))


def test_blocks_and_round_trip(tmp_path, inputs):
    # the second stage's downsampling runs before its blocks and converts with the block before it
    analog = {1: ["stages.1.blocks.0", "stages.1.blocks.1", "stages.1.blocks.2", "stages.1.blocks.3", "head"]}
    analog[0] = ["stages.0.blocks.0", "stages.1", "head"]
    assert_blocks_and_round_trip(
        lambda: build("distilled, LayerScale"), inputs, analog, tmp_path / "net.safetensors"
    )
