"""timm's Twins (PCPVT and SVT): global sub-sampled attention (PVT v2's twin), locally grouped
attention in padded windows, positional encoding generators; the twins, conversion, rate links,
``blocks=k`` and save/load."""

import pytest
import timm
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_links_keep_outputs,
    assert_rates_up_to,
    assert_twin_matches,
    random_images,
    spread,
)
from timm.models.twins import GlobalSubSampleAttn, LocallyGroupedAttn

import transpike
from transpike.rules.timm_pcpvt_svt import ExplicitGroupedAttn
from transpike.rules.timm_pvt import ExplicitReductionAttention

#: two stages; at 36 px 9×9 tokens (SVT's windows of 2 pad them to 10×10), then 4×4
TINY = dict(embed_dims=(8, 16), depths=(1, 2), num_heads=(1, 2), sr_ratios=(2, 1), mlp_ratios=(2, 2))
TINY["num_classes"] = 5
VARIANTS = {"twins_pcpvt_small": {}, "twins_svt_small": dict(wss=(2, 2))}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, **TINY, **VARIANTS[name]).eval()
    scaled = ("qkv.weight", "q.weight", "kv.weight")
    return spread(model, ("attn.proj.weight", "fc2.weight", "head.weight"), scaled=scaled)


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(36, (16, 4))


@pytest.mark.parametrize("name", VARIANTS)
def test_the_twins_compute_what_timm_does(name, inputs):
    """PCPVT: global attention in every block; SVT: locally grouped, then global, attention."""
    twins = (ExplicitReductionAttention, ExplicitGroupedAttn)
    assert_twin_matches(build(name), inputs[1], (GlobalSubSampleAttn, LocallyGroupedAttn), twins, 3)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_twins_converts(name, options, inputs):
    snn = assert_converts(build(name), *inputs, options, direct="patch_embeds.0.proj", products=3 * 2)
    weights = {r.path for r in snn.report().by_role("mt+weight")}
    assert {"patch_embeds.1.proj", "pos_block.0.proj.0"} <= weights


@pytest.mark.parametrize("name", VARIANTS)
def test_every_module_passes_rates_like_increments(name, inputs):
    assert_rates_up_to(build(name), *inputs)


def test_blocks_and_round_trip(inputs, tmp_path):
    """blocks=k counts each stage's blocks; the positional encoding generators, after every block
    in timm's layout, stay analog whenever one block does; linked = unlinked; save/load."""
    calibration, x = inputs
    name = "twins_svt_small"
    tail = ["pos_block.0", "pos_block.1", "norm", "head"]
    expected = {1: ["blocks.1.0", "blocks.1.1", *tail], 2: ["blocks.1.1", *tail], 3: []}
    linked = transpike.convert(build(name).double(), calibration.double(), blocks=2)
    assert_links_keep_outputs(linked, x.double())
    spec = {"timm": name, "kwargs": {**TINY, **VARIANTS[name]}}
    assert_blocks_and_round_trip(lambda: build(name), inputs, expected, tmp_path / "twins.safetensors", spec)
