"""timm's LeViT (tokens or feature maps, one head or two distilled ones): attention with v wider
than q and k and learned biases per relative offset, the downsampling attention that takes its
queries from a subsampled grid, BatchNorm after every weight layer, Hardswish; the twin,
conversion, rate links, ``blocks=k`` and save/load."""

import pytest
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
from timm.models.levit import Levit, LevitDistilled

import transpike
from transpike import ConversionOptions, prepare
from transpike.rules.timm_levit import ExplicitLevitAttention

#: two stages at 64 px: 4×4 tokens, then 2×2 after the downsampling attention
TINY = dict(img_size=64, embed_dim=(16, 32), key_dim=8, num_heads=(2, 4), depth=(1, 1), num_classes=5)
KINDS = {"tokens": (Levit, False), "feature maps": (Levit, True), "distilled": (LevitDistilled, False)}


def build(kind: str) -> torch.nn.Module:
    """A small random-init LeViT whose blocks matter: the residual branches' last BatchNorms at 1
    (timm starts them at 0), the attention biases spread (timm: 0), q and k scaled up."""
    cls, use_conv = KINDS[kind]
    torch.manual_seed(0)
    model = cls(**TINY, use_conv=use_conv).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d) and not module.weight.any():
                module.weight.fill_(1.0)
    draw(model, "attention_biases", 1.0)
    scaled = ("qkv.linear.weight", "q.ln.linear.weight", "kv.linear.weight")
    return spread(model, ("head.linear.weight", "head_dist.linear.weight"), scaled=scaled)


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


@pytest.mark.parametrize("kind", KINDS)
def test_the_twin_computes_what_timm_does(kind, inputs):
    model = build(kind)
    prepared = prepare(model, ConversionOptions())
    assert sum(isinstance(m, ExplicitLevitAttention) for m in prepared.modules()) == 3
    with torch.no_grad():
        assert relative_error(prepared(inputs[1]), model(inputs[1])) < 1e-6


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_levit_converts(kind, options, inputs):
    """The stem's first convolution reads the image; two products in each of the two blocks and in
    the downsampling attention; Hardswish (before each projection too) is an EC module."""
    snn = assert_converts(build(kind), *inputs, options, direct="stem.conv1.linear", products=3 * 2)
    ec = {r.path for r in snn.report().by_role("ec")}
    projections = ["stages.0.blocks.0.attn.proj.act", "stages.1.downsample.attn_downsample.proj.act"]
    assert {"stem.act1", *projections} <= ec


@pytest.mark.parametrize("kind", KINDS)
def test_every_module_passes_rates_like_increments(kind, inputs):
    outputs = ("head.linear", "head_dist.linear") if kind == "distilled" else ("head.linear",)
    assert_rates_up_to(build(kind), *inputs, outputs=outputs)


@pytest.mark.parametrize("kind", ["tokens", "distilled"])
def test_blocks_and_round_trip(kind, inputs, tmp_path):
    """blocks=k counts the stages' blocks (the downsampling attention before the second stage's
    block converts with it); both heads stay analog; linked = unlinked. Save/load keeps timm's
    keys."""
    calibration, x = inputs
    heads = ["head", "head_dist"] if kind == "distilled" else ["head"]
    expected = {0: ["stages.0.blocks.0", "stages.1", *heads], 1: ["stages.1.blocks.0", *heads], 2: []}
    linked = transpike.convert(build(kind).double(), calibration.double(), blocks=1)
    assert_links_keep_outputs(linked, x.double())
    assert_blocks_and_round_trip(lambda: build(kind), inputs, expected, tmp_path / "levit.safetensors")
