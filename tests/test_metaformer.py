"""timm's MetaFormer class: PoolFormer (v1: GroupNorm and GELU, linear head; v2), ConvFormer
(separable convolutions with StarReLU) and CAFormer (attention in the last two stages), LayerScale
and ResScale, MLP heads with squared ReLU; the twin, conversion, rate links, ``blocks=k`` and
save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_links_keep_outputs,
    assert_rates_up_to,
    assert_twin_matches,
    random_images,
    spread,
)
from timm.layers import GroupNorm1
from timm.models.metaformer import (
    Attention,
    GroupNorm1NoBias,
    LayerNorm2dNoBias,
    LayerNormNoBias,
    MetaFormer,
    SepConv,
)
from torch import nn

import transpike
from transpike.rules.timm_twins import ExplicitAttention

#: timm's registered variants (caformer_s18 ... poolformerv2_s12) at one block per stage, 64 px
#: (16×16 to 2×2 maps); CAFormer's attention stages get one head of 32 channels, then two.
#: PoolFormer v1's LayerScale starts at 1, not 1e-5, which would hide its blocks.
TINY = dict(depths=(1, 1, 1, 1), dims=(16, 16, 32, 64), num_classes=5)
VARIANTS = {
    "caformer": dict(
        token_mixers=[SepConv, SepConv, Attention, Attention],
        norm_layers=[LayerNorm2dNoBias] * 2 + [LayerNormNoBias] * 2,
    ),
    "convformer": dict(token_mixers=SepConv, norm_layers=LayerNorm2dNoBias),
    "poolformer": dict(
        downsample_norm=None, mlp_act=nn.GELU, mlp_bias=True, norm_layers=GroupNorm1,
        layer_scale_init_values=1.0, res_scale_init_values=None, use_mlp_head=False,
    ),
    "poolformerv2": dict(norm_layers=GroupNorm1NoBias, use_mlp_head=False),
}  # fmt: skip


def build(variant: str = "caformer") -> torch.nn.Module:
    torch.manual_seed(0)
    model = MetaFormer(**TINY, **VARIANTS[variant]).eval()
    return spread(model, ("token_mixer.proj.weight", "pwconv2.weight", "mlp.fc2.weight", "fc2.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


def test_the_twin_computes_what_timm_does(inputs):
    assert_twin_matches(build(), inputs[1], Attention, ExplicitAttention, 2)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_metaformers_convert(variant, options, inputs):
    """The stem's convolution reads the image; CAFormer's two attention blocks have two products
    each; StarReLU (or GELU), the norms and the MLP head's squared ReLU are EC modules."""
    products = 4 if variant == "caformer" else 0
    snn = assert_converts(build(variant), *inputs, options, direct="stem.conv", products=products)
    ec = {r.path for r in snn.report().by_role("ec")}
    assert {"stages.0.blocks.0.mlp.act", "stages.0.blocks.0.norm1", "head.norm"} <= ec
    assert ("head.fc.act" in ec) == VARIANTS[variant].get("use_mlp_head", True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_module_passes_rates_like_increments(variant, inputs):
    """Up to the classifier: the MLP head's last Linear, or the one Linear."""
    output = "head.fc.fc2" if VARIANTS[variant].get("use_mlp_head", True) else "head.fc"
    assert_rates_up_to(build(variant), *inputs, outputs=(output,))


def test_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts each stage's blocks (a later stage's downsampling converts with the stage or
    alone); the MLP head left analog is one EC module; saved and loaded by the model's spec, the
    network keeps timm's keys."""
    calibration, x = inputs
    expected = {1: ["stages.1.blocks.0", "stages.2", "stages.3", "head"], 3: ["stages.3.blocks.0", "head"]}
    expected[4] = []
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=3), x.double())
    assert_blocks_and_round_trip(build, inputs, expected, tmp_path / "caformer.safetensors")
