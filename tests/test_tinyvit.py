"""timm's TinyViT: MBConv blocks, window attention with its own LayerNorm, v wider than q and k
and learned biases per relative offset, local depthwise convolutions, convolutional patch merging;
the twin, conversion, rate links, ``blocks=k`` over MBConv and attention blocks, and save/load."""

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
    draw,
    random_images,
    spread,
)
from timm.models.tiny_vit import Attention

import transpike
from transpike.rules.timm_tinyvit import ExplicitBiasedAttention

#: an MBConv stage, then two attention stages with windows of 2 (at 36 px: 9×9 tokens, then 5×5
#: padded to 6×6, then 3×3 padded to 4×4)
TINY = dict(embed_dims=(8, 16, 32), depths=(1, 1, 2), num_heads=(1, 2, 4), window_sizes=(2, 2, 2))
TINY["num_classes"] = 5


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    model = draw(timm.create_model("tiny_vit_5m_224", **TINY).eval(), "attention_biases", 1.0)  # timm: zeros
    # timm zeroes the convolution stage's last BatchNorm, which would hide its block
    return spread(draw(model, "conv3.bn.weight", 1.0), ("attn.proj.weight", "fc2.weight", "head.fc.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(36)


def test_the_twin_computes_what_timm_does(inputs):
    assert_twin_matches(build(), inputs[1], Attention, ExplicitBiasedAttention, 3)


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_tinyvit_converts(options, inputs):
    """The stem's first convolution reads the image; every other convolution and Linear gets an MT
    neuron; the attention's own LayerNorm and the GELUs are EC modules."""
    snn = assert_converts(build(), *inputs, options, direct="patch_embed.conv1.conv", products=3 * 2)
    report = snn.report()
    block = "stages.1.blocks.0"
    weights = {r.path for r in report.by_role("mt+weight")}
    assert {"stages.0.blocks.0.conv2.conv", f"{block}.local_conv.conv", "stages.1.downsample.conv1.conv"} <= (
        weights
    )
    assert {f"{block}.attn.norm", "stages.0.blocks.0.act3"} <= {r.path for r in report.by_role("ec")}


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build(), *inputs, outputs=("head.fc",))


def test_blocks_count_every_stages_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts the MBConv block, then the attention blocks; from the first analog block
    on, everything stays analog (a stage's patch merging, before its blocks, converts with the
    stage's first block or alone); linked = unlinked. Save/load keeps timm's keys."""
    calibration, x = inputs
    expected = {
        1: ["stages.1.blocks.0", "stages.2", "head"],
        2: ["stages.2.blocks.0", "stages.2.blocks.1", "head"],
        3: ["stages.2.blocks.1", "head"],
        4: [],
    }
    assert_blocks(build(), calibration, x, expected)
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=2), x.double())
    spec = {"timm": "tiny_vit_5m_224", "kwargs": TINY}
    snn = transpike.convert(build(), calibration, method="sit", model_spec=spec)
    assert_round_trip(snn, build, x, tmp_path / "tinyvit.safetensors", by_spec=True)
