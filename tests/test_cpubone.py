"""timm's CPUBone: LowFormer's attention on a downsampled map (with the 2×2 projection's zero
padding of odd maps, and nearest or transposed-convolution upsampling), fused or unfused MBConv
blocks, the head's Linear with LayerNorm; the twin, conversion, the one rate link, ``blocks=k``
and save/load."""

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
from timm.models.cpubone import ConvAttention, CPUBone

from transpike.rules.timm_cpubone import ExplicitCpuBoneAttention

#: 40 px images: maps of 20, 10, 5, 3 and 2 px; after a downsampling block, one attention block in
#: the third stage, on the 3 px map (odd: padded to 4 before its strided 2×2 projection), two in
#: the fourth, on the 2 px map
SMALL = dict(width_list=[8, 8, 16, 32, 64], depth_list=[0, 1, 1, 1, 2], head_widths=(64, 32), num_classes=5)
VARIANTS = {
    # the released checkpoints' flags (cpubone_nano to b3)
    "released": dict(
        fused_conv=True,
        fused_downsample=True,
        attn_mlp_ratio=4,
        expand_groups=2,
        small_kernels=True,
        attn_upsample="nearest",
    ),
    "unfused, transposed, every norm": dict(local_mbconv_norm="all"),
}


def build(variant: str) -> torch.nn.Module:
    """A small random-init CPUBone whose attention matters: its 1×1 q, k, v convolution ×3."""
    torch.manual_seed(0)
    model = CPUBone(**SMALL, **VARIANTS[variant]).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("pwise.weight"):
                parameter.mul_(3)
    return model


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(40)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_twin_computes_what_timm_does(variant, inputs):
    assert_twin_matches(build(variant), inputs[1], ConvAttention, ExplicitCpuBoneAttention, 3)
    assert_prepared_matches_in_float64(build(variant), inputs[1])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_cpubone_converts(variant, options, inputs):
    """The stem's convolution reads the image; Q·Kᵀ and attn·V in each of three attentions."""
    assert_converts(build(variant), *inputs, options, direct="stem.0.conv", products=2 * 3, tolerance=0.2)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_module_passes_rates_like_increments(variant, inputs):
    """One link from the stem to the classifier's Linear."""
    assert_rates_up_to(build(variant), *inputs, outputs=("head.classifier.linear",))


def test_blocks_and_round_trip(tmp_path, inputs):
    variant = "released"
    analog = {  # the attention stages open with a downsampling MBConv: stages.2.0, stages.3.0
        2: ["stages.2.0", "stages.2.1", "stages.3", "head"],  # the convolution stages' blocks converted
        5: ["stages.3.1", "stages.3.2", "head"],
    }
    spec = {"timm": "cpubone_nano", "kwargs": {**SMALL, **VARIANTS[variant]}}
    assert_blocks_and_round_trip(lambda: build(variant), inputs, analog, tmp_path / "net.safetensors", spec)
