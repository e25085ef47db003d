"""timm's MobileNetV4 (built by its ``MobileNetV3`` class): fused and universal inverted residuals,
plain convolution blocks, and the hybrids' mobile multi-query attention (heads sharing one key and
one value, optionally from a strided depthwise convolution; query pooling and output upsampling);
the twin, conversion, the one rate link, ``blocks=k`` and save/load."""

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
from timm.layers.attention2d import Attention2d, MultiQueryAttention2d
from timm.models._efficientnet_builder import decode_arch_def
from timm.models.mobilenetv3 import MobileNetV3

from transpike.rules.timm_mobilenetv4 import ExplicitAttention2d, ExplicitMultiQueryAttention2d

#: at 32 px: a fused inverted residual to 16 px, then 8 px with a multi-query attention whose key
#: and value maps are downsampled to 4 px, then 4 px with a plain one and a multi-head one, each
#: attention followed by an FFN block (timm's feature info fails on a stage that ends in one), then
#: a 1×1 convolution block and the head (the hybrids' stages, with fewer blocks and channels)
ARCH = [
    ["er_r1_k3_s2_e4_c16"],
    ["uir_r1_a3_k5_s2_e4_c24", "mqa_r1_k3_h2_s1_v2_d8_c24", "uir_r1_a0_k0_s1_e2_c24"],
    ["uir_r1_a3_k3_s2_e2_c32", "mqa_r1_k3_h2_s1_d8_c32", "mha_r1_k3_h2_s1_d8_c32", "uir_r1_a0_k0_s1_e2_c32"],
    ["cn_r1_k1_s1_c48"],
]


def build() -> torch.nn.Module:
    """A small hybrid MobileNetV4 (timm's hybrid settings: head norm, no head bias, layer scale),
    its layer scales at 0.5 (timm starts them at 1e-5, which leaves a random-init network's output
    at 1e-16 after the downsampling blocks, which have no skip)."""
    torch.manual_seed(0)
    kwargs = dict(head_bias=False, head_norm=True, num_features=64, stem_size=8, num_classes=5)
    model = MobileNetV3(decode_arch_def(ARCH), layer_scale_init_value=0.5, **kwargs)
    return model.eval()


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32)


@pytest.mark.parametrize("layout", [False, True])
def test_the_twins_compute_what_timm_does(layout, inputs):
    """Either way timm lays out its operands: the multi-query attention's einsum or matmul form,
    the multi-head attention's heads first or q, k, v first."""
    model = build()
    for module in model.modules():
        if isinstance(module, MultiQueryAttention2d):
            module.einsum = layout
        if isinstance(module, Attention2d):
            module.head_first = layout
    assert_twin_matches(model, inputs[1], MultiQueryAttention2d, ExplicitMultiQueryAttention2d, 2)
    assert_twin_matches(model, inputs[1], Attention2d, ExplicitAttention2d, 1)
    assert_prepared_matches_in_float64(model, inputs[1])


def test_query_pooling_and_output_upsampling(inputs):
    """With query strides the query is average-pooled and the output upsampled back (bilinear)."""
    torch.manual_seed(0)
    attn = MultiQueryAttention2d(24, num_heads=2, key_dim=8, value_dim=8, query_strides=2, kv_stride=2)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 24, 3, padding=1), attn).eval()
    assert_twin_matches(
        model, inputs[1][:, :, :8, :8], MultiQueryAttention2d, ExplicitMultiQueryAttention2d, 1
    )


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_mobilenetv4_converts(options, inputs):
    """The stem's convolution reads the image; Q·Kᵀ and attn·V in each of three attentions."""
    assert_converts(build(), *inputs, options, direct="conv_stem", products=3 * 2, tolerance=0.2)


def test_every_module_passes_rates_like_increments(inputs):
    """One link from the stem to the classifier."""
    assert_rates_up_to(build(), *inputs, outputs=("classifier",))


def test_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts every stage's blocks in turn."""
    head = ["conv_head", "norm_head", "classifier"]
    analog = {
        2: ["blocks.1.1", "blocks.1.2", "blocks.2", "blocks.3", *head],
        7: ["blocks.2.3", "blocks.3", *head],
    }
    assert_blocks_and_round_trip(build, inputs, analog, tmp_path / "net.safetensors")
