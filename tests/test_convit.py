"""timm's ConViT: gated positional self-attention (a gate mixing the content softmax with a
constant positional softmax) in the first blocks, plain self-attention after the class token
joins; the twins, conversion, rate links, ``blocks=k`` and save/load."""

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
from timm.models.convit import GPSA

import transpike
from transpike.rules.timm_convit import ExplicitGatedAttention, patch_offsets

#: at 32 px: 4×4 patches, two GPSA blocks, then the class token and one MHSA block; four heads of 8
TINY = dict(img_size=32, patch_size=8, embed_dim=8, depth=3, local_up_to_layer=2, num_classes=5)


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("convit_tiny", **TINY).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, GPSA):  # timm starts every gate at 1: heads that mix unlike each other
                module.gating_param.normal_(0, 1)
    drawn, scaled = ("attn.proj.weight", "mlp.fc2.weight", "head.weight"), ("qkv.weight", "qk.weight")
    return spread(model, drawn, scaled=scaled)


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32, (16, 4))


def test_the_twin_computes_what_timm_does(inputs):
    """Two GPSA twins (timm's MHSA through the plain attention twin); the patch offsets are
    timm's table."""
    assert torch.equal(patch_offsets(49, torch.zeros(1)), GPSA(8, 4).get_rel_indices(49))
    assert_twin_matches(build(), inputs[1], GPSA, ExplicitGatedAttention, 2)


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_convit_converts(options, inputs):
    """The patch embedding reads the image; two products per block; each GPSA's positional
    Linear, which reads constant offsets, is a constant."""
    snn = assert_converts(build(), *inputs, options, direct="patch_embed.proj", products=3 * 2)
    constants = [r.path for r in snn.report().by_role("constant")]
    assert constants == ["blocks.0.attn.pos_proj", "blocks.1.attn.pos_proj"]


def test_the_positional_attention_is_charged_as_float_work(inputs):
    """P·V runs dense on V's layer output at every step: the full energy form charges its MACs
    (ANN-sized: 16 tokens² × 32 channels per GPSA block, two blocks)."""
    calibration, x = inputs
    report = transpike.account(transpike.convert(build(), calibration), x, 2)
    between = [row for row in report.analog if row["role"] == "other"]
    assert [row["macs"] for row in between] == [2 * 16 * 16 * 32]


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build(), *inputs)


def test_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts the blocks, GPSA and MHSA alike; saved and loaded by the model's spec, the
    network keeps timm's keys."""
    calibration, x = inputs
    expected = {1: ["blocks.1", "blocks.2", "norm", "head"], 2: ["blocks.2", "norm", "head"], 3: []}
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=2), x.double())
    spec = {"timm": "convit_tiny", "kwargs": TINY}
    assert_blocks_and_round_trip(build, inputs, expected, tmp_path / "convit.safetensors", spec)
