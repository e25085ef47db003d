"""timm's EfficientViT from Microsoft Research (M0 to M5): cascaded group attention within windows
(each head reads the previous head's output), a bias per pixel offset, patch merging with
squeeze-and-excitation; the twins, conversion, rate links, ``blocks=k`` and save/load."""

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
)
from timm.models.efficientvit_msra import EfficientVitMsra

from transpike.rules.timm_efficientvit_msra import ExplicitCascadedGroupAttention, ExplicitPatchMerging

#: at 96 px: maps of 6 × 6 (cut into four padded windows of 4 × 4), then 3 × 3 and 2 × 2 (one
#: window each); two heads of key width 4 per attention
TINY = dict(img_size=96, embed_dim=(16, 24, 32), key_dim=(4, 4, 4), depth=(1, 1, 1), num_heads=(2, 2, 2))
TINY.update(window_size=(4, 4, 4), kernels=(3, 3), num_classes=5)


def build() -> torch.nn.Module:
    """BatchNorm scales drawn (timm starts those closing each branch at zero, which would leave
    the branches out) and the offset biases drawn (timm: zeros)."""
    torch.manual_seed(0)
    model = draw(EfficientVitMsra(**TINY).eval(), "bn.weight", 0.5)
    return draw(model, "attention_biases", 1.0)


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(96, (16, 4))


def test_the_twins_compute_what_timm_does(inputs):
    prepared = assert_prepared_matches_in_float64(build(), inputs[1])
    assert sum(isinstance(m, ExplicitCascadedGroupAttention) for m in prepared.modules()) == 3
    assert sum(isinstance(m, ExplicitPatchMerging) for m in prepared.modules()) == 2


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_efficientvit_msra_converts(options, inputs):
    """The stem's first convolution reads the image; two products per head, two heads per
    attention, and each merging's squeeze-and-excitation; the projection's ReLU and each
    merging's two ReLUs are EC modules."""
    snn = assert_converts(build(), *inputs, options, direct="patch_embed.conv1.conv", products=3 * 2 * 2 + 2)
    ec = {r.path for r in snn.report().by_role("ec")}
    assert {"stages.0.blocks.0.mixer.m.attn.proj.0", "stages.1.downsample.patchmerge.act2"} <= ec


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build(), *inputs, outputs=("head.linear",))


def test_blocks_and_round_trip(tmp_path, inputs):
    # a stage's downsampling runs before its blocks, and converts with the blocks before it
    after = ["head"]  # the average pool stays as it is
    analog = {1: ["stages.1.blocks.0", "stages.2", *after], 2: ["stages.2.blocks.0", *after]}
    assert_blocks_and_round_trip(build, inputs, analog, tmp_path / "net.safetensors")
