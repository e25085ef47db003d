"""timm's SHViT: single-head attention on part of the channels, the rest passed to the
projection; the twin, conversion, rate links, ``blocks=k`` and save/load."""

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
from timm.models.shvit import SHViT

from transpike.rules.timm_shvit import ExplicitSingleHeadAttention

#: at 64 px: a stem to 4 × 4, then 2 × 2 and 1 × 1; one block per stage, each attending with 8 of
#: its channels
TINY = dict(embed_dim=(16, 24, 32), partial_dim=(8, 8, 8), qk_dim=(4, 4, 4), depth=(1, 1, 1), num_classes=5)


def build() -> torch.nn.Module:
    """BatchNorm scales drawn: timm starts those closing each branch at zero, which would leave
    the branches out."""
    torch.manual_seed(0)
    return draw(SHViT(**TINY).eval(), "bn.weight", 0.5)


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


def test_the_twin_computes_what_timm_does(inputs):
    prepared = assert_prepared_matches_in_float64(build(), inputs[1])
    assert sum(isinstance(m, ExplicitSingleHeadAttention) for m in prepared.modules()) == 3


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_shvit_converts(options, inputs):
    """The stem's first convolution reads the image; two products per attention and one per
    merging's squeeze-and-excitation; the attention's norm and the projection's ReLU are EC
    modules."""
    snn = assert_converts(build(), *inputs, options, direct="patch_embed.0.c", products=3 * 2 + 2)
    ec = {r.path for r in snn.report().by_role("ec")}
    assert {"stages.0.blocks.0.mixer.m.pre_norm", "stages.0.blocks.0.mixer.m.proj.0"} <= ec


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build(), *inputs, outputs=("head.l",))


def test_blocks_and_round_trip(tmp_path, inputs):
    assert_blocks_and_round_trip(
        build,
        inputs,
        {1: ["stages.1.blocks.0", "stages.2", "head"]},
        tmp_path / "net.safetensors",
    )
