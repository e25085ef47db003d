"""timm's DaViT: spatial blocks (window attention on the map's pixels) and channel blocks
(attention across channels, V1 and V2), convolutional position encodings, padded stem and
downsampling; the twins, conversion, rate links, ``blocks=k`` and save/load."""

import pytest
import timm
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks,
    assert_converts,
    assert_links_keep_outputs,
    assert_rates_up_to,
    assert_round_trip,
    assert_twin_matches,
    random_images,
    spread,
)
from timm.models.davit import WindowAttention

import transpike
from transpike import ConversionOptions, prepare
from transpike.rules.timm_davit import ExplicitChannelAttention
from transpike.rules.timm_twins import ExplicitAttention

#: at 64 px: maps of 16×16 to 2×2, one dual block (spatial, then channel) per stage, two heads,
#: windows of 4×4 (the last stages' maps padded up to one window)
TINY = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 48, 64), num_heads=(2, 2, 2, 2), window_size=4)
TINY.update(num_classes=5)
VERSIONS = {"v1": {}, "v2": dict(channel_attn_v2=True)}


def build(version: str = "v1") -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("davit_tiny", **TINY, **VERSIONS[version]).eval()
    return spread(model, ("attn.proj.weight", "mlp.fc2.weight", "head.fc.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


@pytest.mark.parametrize("version", VERSIONS)
def test_the_twins_compute_what_timm_does(version, inputs):
    """Four window-attention and four channel-attention twins; the downsampling convolutions,
    wrapped, still answer for their kernel size, which timm's forward reads to pad."""
    model = build(version)
    assert_twin_matches(model, inputs[1], WindowAttention, ExplicitAttention, 4)
    prepared = prepare(model, ConversionOptions())
    assert sum(isinstance(m, ExplicitChannelAttention) for m in prepared.modules()) == 4
    assert prepared.get_submodule("stages.1.downsample.conv").kernel_size == (2, 2)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_davit_converts(version, options, inputs):
    """The stem's convolution reads the image; two products per attention, eight attentions; the
    position encodings' depthwise convolutions get MT neurons."""
    snn = assert_converts(build(version), *inputs, options, direct="stem.conv", products=8 * 2)
    weights = {r.path for r in snn.report().by_role("mt+weight")}
    assert {"stages.0.blocks.0.0.cpe1.proj", "stages.1.downsample.conv"} <= weights


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build(), *inputs, outputs=("head.fc",))


def test_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts the dual blocks stage by stage (a later stage's downsampling converts with
    the blocks before it); saved and loaded by the model's spec, the network keeps timm's keys."""
    calibration, x = inputs
    expected = {1: ["stages.1.blocks.0", "stages.2", "stages.3", "head"], 3: ["stages.3.blocks.0", "head"]}
    expected[4] = []
    assert_blocks(build(), calibration, x, expected)
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=2), x.double())
    spec = {"timm": "davit_tiny", "kwargs": {**TINY, **VERSIONS["v2"]}}
    snn = transpike.convert(build("v2"), calibration, method="sit", model_spec=spec)
    assert_round_trip(snn, lambda: build("v2"), x, tmp_path / "davit.safetensors", by_spec=True)
