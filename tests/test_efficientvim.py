"""timm's EfficientViM: the hidden-state mixer (a softmax over the tokens and four products of
spiking operands) as a twin, branches gated by constants, patch merging with squeeze-and-
excitation, the weighted sum of heads on each stage's hidden state and the final map; blocks and
stages that return one packed tensor; the twin, conversion, the one rate link, ``blocks=k`` and
save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_links_keep_outputs,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    random_images,
)
from timm.models.efficientvim import EfficientViM

import transpike
from transpike.rules.timm_efficientvim import ExplicitHSMSSD, JoinedEfficientViMStage

#: at 48 px: the stem's 3 × 3 map, merged to 2 × 2 (odd: the merging's convolution pads) and 1 × 1
SMALL = dict(embed_dim=(16, 24, 32), depths=(1, 2, 1), state_dim=(8, 8, 8), mlp_ratio=2.0, num_classes=5)
HEADS = ("heads.0", "heads.1", "heads.2", "heads.3")


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    return EfficientViM(**SMALL).eval()


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(48)


def test_prepared_computes_what_timm_does(inputs):
    prepared = assert_prepared_matches_in_float64(build(), inputs[1])
    assert sum(isinstance(m, ExplicitHSMSSD) for m in prepared.modules()) == 4
    assert all(isinstance(stage, JoinedEfficientViMStage) for stage in prepared.stages)


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_efficientvim_converts(options, inputs):
    """The stem's first convolution reads the image; four products in each of four mixers, one
    in each merging's squeeze-and-excitation."""
    snn = assert_converts(build(), *inputs, options, direct="patch_embed.conv.0.conv", products=4 * 4 + 2)
    assert {"stages.1.blocks.1.mixer.softmax", "norm.0", "norm.3"} <= {
        r.path for r in snn.report().by_role("ec")
    }


def test_every_module_passes_rates_like_increments(inputs):
    """One link from the stem to the four heads."""
    assert_rates_up_to(build(), *inputs, outputs=HEADS)


def test_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts every stage's blocks in turn; a block or stage left analog returns the
    packed tensor."""
    after = ["norm.0", "norm.1", "norm.2", "norm.3", *HEADS]
    analog = {
        1: ["stages.1.blocks.0", "stages.1.blocks.1", "stages.1.downsample", "stages.2", *after],
        3: ["stages.2.blocks.0", *after],
    }
    assert_blocks_and_round_trip(build, inputs, analog, tmp_path / "net.safetensors")
    assert_links_keep_outputs(
        transpike.convert(build().double(), inputs[0].double(), blocks=1), inputs[1].double()
    )
