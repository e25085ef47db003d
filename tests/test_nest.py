"""timm's NesT: ViT layers within square blocks of the token map (attention with an extra block
dimension), block aggregation by a convolution, a channel LayerNorm and a max pool; the twin,
conversion, rate links, ``blocks=k`` and save/load."""

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
    spread,
)
from timm.models.nest import Nest

import transpike
from transpike.rules.timm_nest import ExplicitBlockAttention

#: at 32 px: patches of 2 (16×16 tokens in 16 blocks of 4×4), aggregated to 4 blocks of 4×4, then
#: one; 1, 1 and 2 layers of widths 16 to 64
TINY = dict(
    img_size=32, patch_size=2, num_levels=3, embed_dims=(16, 32, 64), num_heads=(2, 2, 4), depths=(1, 1, 2)
)
TINY.update(num_classes=5)


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    model = Nest(**TINY).eval()
    return spread(model, ("attn.proj.weight", "mlp.fc2.weight", "head.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32, (16, 4))


def test_the_twin_computes_what_timm_does(inputs):
    prepared = assert_prepared_matches_in_float64(build(), inputs[1])
    assert sum(isinstance(m, ExplicitBlockAttention) for m in prepared.modules()) == 4


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_nest_converts(options, inputs):
    """The patch embedding reads the image; two products per layer; each aggregation's
    convolution gets an MT neuron, its norm and max pool are EC modules."""
    snn = assert_converts(build(), *inputs, options, direct="patch_embed.proj", products=4 * 2)
    report = snn.report()
    assert "levels.1.pool.conv" in {r.path for r in report.by_role("mt+weight")}
    assert {"levels.1.pool.norm", "levels.1.pool.pool"} <= {r.path for r in report.by_role("ec")}


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build(), *inputs)


def test_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts the layers level by level (a later level's aggregation converts with the
    layers before it); saved and loaded (the ANN rebuilt by ``build``), the network keeps timm's
    keys."""
    calibration, x = inputs
    tail = ["norm", "head"]  # the average pool stays as it is
    expected = {
        1: ["levels.1.transformer_encoder.0", "levels.2", *tail],
        3: ["levels.2.transformer_encoder.1", *tail],
    }
    expected[4] = []
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=2), x.double())
    assert_blocks_and_round_trip(build, inputs, expected, tmp_path / "nest.safetensors")
