"""timm's Visformer: a convolution stem, patch embeddings opening three stages, convolution-only
blocks in the first stage and attention on the map's pixels in the others, BatchNorm as the norms;
the twin, conversion, rate links, ``blocks=k`` and save/load."""

import pytest
import timm
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
from timm.models.visformer import Attention

import transpike
from transpike.rules.timm_coat import StagePatchEmbed
from transpike.rules.timm_visformer import ExplicitMapAttention

#: Visformer-Tiny's layout at 64 px (stem to 32×32, stages at 8×8, 4×4 and 2×2), one block per
#: stage, two heads
TINY = dict(img_size=64, init_channels=8, embed_dim=32, depth=(1, 1, 1), num_heads=2, num_classes=5)


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("visformer_tiny", **TINY).eval()
    return spread(model, ("attn.proj.weight", "conv3.weight", "head.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


def test_the_twin_computes_what_timm_does(inputs):
    """Two attention twins (the first stage has none); every patch embedding reads a feature map
    (the stem reads the image)."""
    model = build()
    for fused in (True, False):
        for module in model.modules():
            if isinstance(module, Attention):
                module.fused_attn = fused
        prepared = assert_prepared_matches_in_float64(model, inputs[1])
    assert sum(isinstance(m, ExplicitMapAttention) for m in prepared.modules()) == 2
    assert all(isinstance(prepared.get_submodule(f"patch_embed{s}"), StagePatchEmbed) for s in (1, 2, 3))


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_visformer_converts(options, inputs):
    """The stem's convolution reads the image; the patch embeddings' convolutions get MT neurons;
    two products per attention block."""
    snn = assert_converts(build(), *inputs, options, direct="stem.0", products=2 * 2)
    weights = {r.path for r in snn.report().by_role("mt+weight")}
    assert {"patch_embed1.proj", "stage1.0.mlp.conv2", "stage2.0.attn.qkv"} <= weights


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build(), *inputs)


def test_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts the blocks stage by stage (a later stage's patch embedding converts with the
    blocks before it); saved and loaded by the model's spec, the network keeps timm's keys."""
    calibration, x = inputs
    tail = ["head"]  # the average pool stays as it is
    expected = {1: ["stage2.0", "patch_embed3", "stage3", *tail], 2: ["stage3.0", *tail], 3: []}
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=2), x.double())
    spec = {"timm": "visformer_tiny", "kwargs": TINY}
    assert_blocks_and_round_trip(build, inputs, expected, tmp_path / "visformer.safetensors", spec)
