"""timm's EfficientFormer: pooling token mixers (pool(x) - x), 1×1-convolution MLPs with BatchNorm,
LayerScale, an attention block with learned biases per relative offset (TinyViT's twin) and two
heads averaged; the twin, conversion, rate links, ``blocks=k`` and save/load."""

import pytest
import timm
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_links_keep_outputs,
    assert_rates_up_to,
    draw,
    random_images,
    relative_error,
    spread,
)

import transpike
from transpike import ConversionOptions, prepare
from transpike.rules.timm_tinyvit import ExplicitBiasedAttention

#: three stages; at 112 px the last one's attention sees the 7×7 grid it is built for
TINY = dict(depths=(1, 1, 2), embed_dims=(8, 16, 32), num_vit=1, num_classes=5, layer_scale_init_value=1.0)


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    model = draw(
        timm.create_model("efficientformer_l1", **TINY).eval(), "attention_biases", 1.0
    )  # timm: zeros
    return spread(model, ("attn.proj.weight", "fc2.weight", "head.weight", "head_dist.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(112, (16, 4))


def test_the_twin_computes_what_timm_does(inputs):
    model = build()
    prepared = prepare(model, ConversionOptions())
    assert sum(isinstance(m, ExplicitBiasedAttention) for m in prepared.modules()) == 1
    with torch.no_grad():
        assert relative_error(prepared(inputs[1]), model(inputs[1])) < 1e-6


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_efficientformer_converts(options, inputs):
    """The stem's first convolution reads the image; the MLPs' convolutions get MT neurons; the
    pooling mixers and LayerScale stay as they are (linear)."""
    snn = assert_converts(build(), *inputs, options, direct="stem.conv1", products=2)
    weights = {r.path for r in snn.report().by_role("mt+weight")}
    assert {"stem.conv2", "stages.0.blocks.0.mlp.fc1", "stages.2.blocks.2.token_mixer.qkv"} <= weights


def test_both_heads_read_rates_and_emit_increments(inputs):
    assert_rates_up_to(build(), *inputs, outputs=("head", "head_dist"))


def test_blocks_and_round_trip(inputs, tmp_path):
    """blocks=k counts every stage's blocks (the last stage's flattening is one); linked = unlinked;
    save/load keeps timm's keys, the attention's bias index among them."""
    calibration, x = inputs
    tail = ["norm", "head", "head_dist"]
    expected = {1: ["stages.1.blocks.0", "stages.2", *tail], 5: []}
    expected[3] = ["stages.2.blocks.1", "stages.2.blocks.2", *tail]
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=4), x.double())
    spec = {"timm": "efficientformer_l1", "kwargs": TINY}
    assert_blocks_and_round_trip(build, inputs, expected, tmp_path / "efficientformer.safetensors", spec)
