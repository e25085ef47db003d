"""timm's GC ViT: window attention alternating local queries with the stage's global query (made
by MBConv blocks with squeeze-and-excitation and max pools, repeated for every window), relative
position biases, MBConv downsampling; the map and the global query joined into one tensor, the
twin, conversion, rate links, ``blocks=k`` and save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_links_keep_outputs,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    draw,
    random_images,
    spread,
)
from timm.models.gcvit import GlobalContextVit

import transpike
from transpike.rules.timm_gcvit import ExplicitGlobalWindowAttention, JoinedBlock

#: at 64 px: maps of 16×16 to 2×2 in windows of 4×4 (2×2 in the last stage), the global queries
#: pooled to one window; 1, 2, 1 and 1 blocks (the second of a stage global), two heads
TINY = dict(
    img_size=64, window_ratio=(16, 16, 16, 32), embed_dim=16, depths=(1, 2, 1, 1), num_heads=(2, 2, 2, 2)
)
TINY.update(num_classes=5)


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    model = draw(GlobalContextVit(**TINY).eval(), "relative_position_bias_table", 1.0)  # timm: near zero
    # q and k spread, the branches left at timm's init: drawn larger, the residual streams of these
    # narrow stages grow until one spike per step converges too slowly for 32 steps (0.23 at t = 32)
    return spread(model, drawn=())


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


def test_the_twin_and_the_joined_blocks_compute_what_timm_does(inputs):
    prepared = assert_prepared_matches_in_float64(build(), inputs[1])
    assert sum(isinstance(m, ExplicitGlobalWindowAttention) for m in prepared.modules()) == 5
    assert [block.grid for block in prepared.modules() if isinstance(block, JoinedBlock)] == [
        (16, 16), (8, 8), (8, 8), (4, 4), (2, 2)
    ]  # fmt: skip


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_gcvit_converts(options, inputs):
    """The stem's first convolution reads the image; two products per attention block and one per
    squeeze-and-excitation (the stem's and three downsamplings' MBConv blocks, and the five that
    make the global queries: two, one, one and one); the relative position biases are constants."""
    snn = assert_converts(build(), *inputs, options, direct="stem.conv1", products=5 * 2 + 4 + 5)
    constants = {r.path for r in snn.report().by_role("constant")}
    assert "stages.1.blocks.1.attn.rel_pos" in constants


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build(), *inputs, outputs=("head.fc",))


def test_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts the blocks stage by stage; a block left analog takes and hands on the
    joined tensor; saved and loaded (the ANN rebuilt by ``build``), the network keeps timm's keys."""
    calibration, x = inputs
    expected = {
        1: ["stages.1.blocks.0", "stages.1.blocks.1", "stages.2", "stages.3", "head"],
        2: ["stages.1.blocks.1", "stages.2", "stages.3", "head"],
        5: [],
    }
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=2), x.double())
    assert_blocks_and_round_trip(build, inputs, expected, tmp_path / "gcvit.safetensors")
