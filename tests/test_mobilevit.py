"""timm's MobileViT (v1: ViT blocks across unfolded patches, a fusion convolution) and MobileViT v2
(separable self-attention), built by ``ByobNet``: the twin, conversion, rate links, ``blocks=k``
and save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    random_images,
    spread,
)
from timm.models.byobnet import ByobNet, ByoModelCfg
from timm.models.mobilevit import _inverted_residual_block, _mobilevit_block, _mobilevitv2_block

from transpike.rules.timm_mobilevit import ExplicitLinearSelfAttention

STEM = dict(stem_chs=8, stem_type="3x3", stem_pool="", downsample="", act_layer="silu")
#: an inverted-residual block, then two MobileViT blocks (each behind an inverted-residual one)
#: of one Transformer block each, at widths 8 to 24
CFGS = {
    "v1": ByoModelCfg(
        blocks=(
            _inverted_residual_block(d=1, c=8, s=1, br=2.0),
            _mobilevit_block(d=1, c=16, s=2, transformer_dim=16, transformer_depth=1, patch_size=2, br=2.0),
            _mobilevit_block(d=1, c=24, s=2, transformer_dim=24, transformer_depth=1, patch_size=2, br=2.0),
        ),
        num_features=32,
        **STEM,
    ),
    "v2": ByoModelCfg(
        blocks=(
            _inverted_residual_block(d=1, c=8, s=1, br=2.0),
            _mobilevitv2_block(d=1, c=16, s=2, transformer_depth=1),
            _mobilevitv2_block(d=1, c=24, s=2, transformer_depth=1),
        ),
        **STEM,
    ),
}
#: 32 px: maps of 16, 8 and 4 pixels; 36 px: 18, 9 and 5, which patches of 2 do not divide (the
#: blocks resize the map bilinearly)
SIZES = {"v1": 32, "v2": 32, "v1 at 36 px": 36, "v2 at 36 px": 36}


def build(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = ByobNet(CFGS[variant.split()[0]], num_classes=5).eval()
    drawn = ("attn.proj.weight", "attn.out_proj.weight", "head.fc.weight")
    return spread(model, drawn, scaled=("qkv.weight",))  # v2: qkv_proj as timm draws it


@pytest.fixture(params=SIZES)
def variant(request) -> str:
    return request.param


@pytest.fixture
def inputs(variant) -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(SIZES[variant], (16, 4))


def test_the_twin_computes_what_timm_does(variant, inputs):
    prepared = assert_prepared_matches_in_float64(build(variant), inputs[1])
    twins = sum(isinstance(m, ExplicitLinearSelfAttention) for m in prepared.modules())
    assert twins == (2 if variant.startswith("v2") else 0)


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_mobilevit_converts(variant, options, inputs):
    """The stem's convolution reads the image; two products per Transformer block (v1: Q·Kᵀ and
    attn·V; v2: the context and the gating); the fusion and projection convolutions get MT
    neurons."""
    snn = assert_converts(build(variant), *inputs, options, direct="stem.conv", products=2 * 2)
    weights = {r.path for r in snn.report().by_role("mt+weight")}
    assert "stages.1.1.conv_proj.conv" in weights
    assert ("stages.1.1.conv_fusion.conv" in weights) == variant.startswith("v1")


def test_every_module_passes_rates_like_increments(variant, inputs):
    assert_rates_up_to(build(variant), *inputs, outputs=("head.fc",))


def test_blocks_and_round_trip(tmp_path):
    # a later stage none of whose blocks is converted is left analog whole
    analog = {1: ["stages.1.0", "stages.1.1", "stages.2", "head"], 3: ["stages.2.0", "stages.2.1", "head"]}
    images = random_images(32, (16, 4))
    assert_blocks_and_round_trip(lambda: build("v2"), images, analog, tmp_path / "net.safetensors")
