"""timm's XCiT: cross-covariance attention (EdgeNeXt's twin), local patch interaction, the
convolutional patch embedding, a Fourier position encoding (a constant) and class attention
(CaiT's twin); conversion, rate links, ``blocks=k`` over both kinds of block, and save/load."""

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
from timm.models.xcit import XCA, ClassAttn

import transpike
from transpike.rules.timm_cait import ExplicitClassAttn
from transpike.rules.timm_edgenext import ExplicitCrossCovarianceAttn

TINY = dict(img_size=32, embed_dim=32, depth=2, num_heads=4, num_classes=5, eta=1.0, cls_attn_layers=1)


def build(**kwargs) -> torch.nn.Module:
    """A small random-init XCiT (patches of 8: two stride-2 convolutions then one) whose blocks
    matter: LayerScale at 1, q and k scaled up, temperatures spread, the branches' outputs large."""
    torch.manual_seed(0)
    model = timm.create_model("xcit_nano_12_p8_224", **{**TINY, **kwargs}).eval()
    with torch.no_grad():
        model.cls_token.normal_(0, 0.5)
        for block in model.blocks:
            block.attn.temperature.uniform_(0.5, 3.0)
    return spread(model, ("attn.proj.weight", "fc2.weight", "head.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32)


@pytest.mark.parametrize("tokens_norm", [False, True])
def test_the_twins_compute_what_timm_does(tokens_norm, inputs):
    model = build(tokens_norm=tokens_norm, global_pool="avg" if tokens_norm else "token")
    twins = (ExplicitCrossCovarianceAttn, ExplicitClassAttn)
    assert_twin_matches(model, inputs[1], (XCA, ClassAttn), twins, 2 + 1)


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_xcit_converts(options, inputs):
    """The stem's first convolution reads the image, its later ones and every Linear and LPI
    convolution get MT neurons; the position encoding is a constant; two products per block."""
    snn = assert_converts(build(), *inputs, options, direct="patch_embed.proj.0.0", products=3 * 2)
    report = snn.report()
    assert [r.path for r in report.by_role("constant")] == ["pos_embed"]
    weights = {r.path for r in report.by_role("mt+weight")}
    assert {"patch_embed.proj.2.0", "blocks.0.local_mp.conv1", "blocks.0.local_mp.conv2"} <= weights
    assert {"blocks.0.attn.q_norm", "blocks.0.local_mp.act"} <= {r.path for r in report.by_role("ec")}


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build(), *inputs)


def test_blocks_count_xca_then_class_attention_blocks(inputs):
    """blocks=k: the XCA blocks (one left analog takes the grid size as a constant), then the
    class-attention block; the stem converts at every k; linked = unlinked."""
    calibration, x = inputs
    tail = ["norm", "head"]
    expected = {1: ["blocks.1", "cls_attn_blocks.0", *tail], 2: ["cls_attn_blocks.0", *tail], 3: []}
    assert_blocks(build(), calibration, x, expected)
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=1), x.double())


def test_round_trip_keeps_timms_keys(tmp_path, inputs):
    calibration, x = inputs
    snn = transpike.convert(build(), calibration, model_spec={"timm": "xcit_nano_12_p8_224", "kwargs": TINY})
    assert_round_trip(snn, build, x, tmp_path / "xcit.safetensors", by_spec=True)
