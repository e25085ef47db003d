"""timm's LowFormer: attention on a map downsampled by a strided depthwise convolution and brought
back by a transposed convolution (a weight layer: ungrouped when the output projection is fused
into it, depthwise after a 1×1 projection otherwise), MBConv and fused MBConv blocks; the twin,
conversion, the one rate link, the parallel form of a transposed convolution, ``blocks=k`` and
save/load."""

import copy

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
from timm.models.lowformer import ConvAttention, LowFormer

import transpike
from transpike.neurons import MTNeuron
from transpike.rules.timm_lowformer import ExplicitConvAttention

#: 64 px images: stages at 16, 8, 4 and 2 px; two attention blocks in each of the last two stages,
#: on the 4 px map downsampled to 2 px, then on the 2 px map
SMALL = dict(width_list=[8, 8, 16, 32, 64], depth_list=[0, 1, 1, 2, 2], head_widths=(64, 32), num_classes=5)
VARIANTS = {"fused": dict(fused_conv=True), "unfused": dict(fused_conv=False)}


def build(variant: str) -> torch.nn.Module:
    """A small random-init LowFormer whose attention matters: its 1×1 q, k, v convolution ×3."""
    torch.manual_seed(0)
    model = LowFormer(**SMALL, **VARIANTS[variant]).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("pwise.weight"):
                parameter.mul_(3)
    return model


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_twin_computes_what_timm_does(variant, inputs):
    assert_twin_matches(build(variant), inputs[1], ConvAttention, ExplicitConvAttention, 4)
    assert_prepared_matches_in_float64(build(variant), inputs[1])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_lowformer_converts(variant, options, inputs):
    """The stem's convolution reads the image; Q·Kᵀ and attn·V in each of four attentions; the
    transposed convolutions are weight layers."""
    snn = assert_converts(build(variant), *inputs, options, direct="stem.0.conv", products=2 * 4)
    upsampling = [r for r in snn.report().rows if r.path.endswith("upsampling")]
    assert len(upsampling) == 4 and all(r.role == "mt+weight" for r in upsampling)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_module_passes_rates_like_increments(variant, inputs):
    """One link from the stem to the classifier."""
    assert_rates_up_to(build(variant), *inputs, outputs=("classifier",))


def test_a_transposed_convolution_has_a_parallel_form():
    """Its weight is [in, out, k, k]: the 2n copies of each input channel, with per-channel
    thresholds, give what the MT neurons and the layer give, step by step."""
    torch.manual_seed(0)
    layer = torch.nn.ConvTranspose2d(6, 4, kernel_size=4, stride=2, padding=1).double()
    theta_pos, theta_neg = (
        torch.rand(6, 1, 1, dtype=torch.float64) + 0.5,
        torch.rand(6, 1, 1, dtype=torch.float64) + 0.5,
    )
    spiking = transpike.SpikingLayer(MTNeuron(theta_pos, theta_neg, levels=4), layer)
    parallel = transpike.ParallelLayer(copy.deepcopy(spiking), channel_dim=-3)
    assert parallel.layer.weight.shape == (2 * 4 * 6, 4, 4, 4)
    for current in torch.randn(5, 2, 6, 3, 3, dtype=torch.float64):
        assert torch.allclose(parallel(current), spiking(current), rtol=1e-9, atol=1e-9)


def test_blocks_and_round_trip(tmp_path, inputs):
    # a later stage none of whose blocks is converted is left analog whole
    head = ["in_conv", "pre_classifier", "classifier"]
    analog = {3: ["stages.2.1", "stages.2.2", "stages.3", *head], 6: ["stages.3.1", "stages.3.2", *head]}
    assert_blocks_and_round_trip(lambda: build("unfused"), inputs, analog, tmp_path / "net.safetensors")
