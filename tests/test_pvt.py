"""timm's PVT v2: attention over spatially reduced keys and values (a strided convolution and a
LayerNorm, or the linear variant's pool, convolution, LayerNorm and GELU), MLPs with a depthwise
convolution, overlapping patch embeddings; the twin, conversion, rate links, ``blocks=k`` over the
stages' blocks, and save/load."""

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
from timm.models.pvt_v2 import Attention

import transpike
from transpike.rules.timm_pvt import ExplicitReductionAttention

#: two stages, the first with keys and values reduced 2×2
TINY = dict(embed_dims=(16, 32), depths=(1, 2), num_heads=(1, 2), sr_ratios=(2, 1), mlp_ratios=(4, 4))
TINY["num_classes"] = 5
VARIANTS = ["pvt_v2_b0", "pvt_v2_b2_li"]  # strided reduction; linear (pooled) reduction


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, **TINY).eval()
    return spread(model, ("attn.proj.weight", "fc2.weight", "head.weight"), scaled=("q.weight", "kv.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32)


@pytest.mark.parametrize("name", VARIANTS)
def test_the_twin_computes_what_timm_does(name, inputs):
    assert_twin_matches(build(name), inputs[1], Attention, ExplicitReductionAttention, 3)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_pvt_converts(name, options, inputs):
    """The first patch embedding reads the image; the later one, the reductions' convolutions and
    the MLPs' depthwise convolutions get MT neurons; the reductions' norms (and the linear
    variant's GELU and ReLUs) are EC modules."""
    snn = assert_converts(build(name), *inputs, options, direct="patch_embed.proj", products=3 * 2)
    report = snn.report()
    weights = {r.path for r in report.by_role("mt+weight")}
    first = "stages.0.blocks.0"
    assert {"stages.1.downsample.proj", f"{first}.attn.sr", f"{first}.mlp.dwconv"} <= weights
    ec = {r.path for r in report.by_role("ec")}
    linear = name.endswith("_li")
    assert (f"{first}.attn.norm" in ec) and ((f"{first}.attn.act" in ec) == linear)
    assert ("stages.1.blocks.0.attn.sr" in weights) == linear  # sr_ratio 1: no reduction but pooled


@pytest.mark.parametrize("name", VARIANTS)
def test_every_module_passes_rates_like_increments(name, inputs):
    assert_rates_up_to(build(name), *inputs)


def test_blocks_count_the_stages_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k: a block left analog takes the grid size as a constant; from the first analog block
    on, everything stays analog (a stage's patch embedding, before its blocks, converts);
    linked = unlinked. Save/load keeps timm's keys."""
    calibration, x = inputs
    tail = ["head"]
    expected = {
        1: ["stages.1.blocks.0", "stages.1.blocks.1", "stages.1.norm", *tail],
        2: ["stages.1.blocks.1", "stages.1.norm", *tail],
        3: [],
    }
    assert_blocks(build("pvt_v2_b0"), calibration, x, expected)
    linked = transpike.convert(build("pvt_v2_b0").double(), calibration.double(), blocks=2)
    assert_links_keep_outputs(linked, x.double())
    spec = {"timm": "pvt_v2_b0", "kwargs": TINY}
    snn = transpike.convert(build("pvt_v2_b0"), calibration, method="sit", model_spec=spec)
    assert_round_trip(snn, lambda: build("pvt_v2_b0"), x, tmp_path / "pvt.safetensors", by_spec=True)
