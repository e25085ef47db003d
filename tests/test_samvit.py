"""timm's SAM image encoder: window and global attention on a channels-last map, the decomposed
relative position term or RoPE, the convolutional neck, with a classifier head or without; the
twin, conversion, rate links, ``blocks=k`` and save/load."""

import pytest
import timm
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks,
    assert_converts,
    assert_links_keep_outputs,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    assert_round_trip,
    draw,
    random_images,
    spread,
)

import transpike
from transpike.rules.timm_samvit import ExplicitSamAttention

#: at 64 px: 8×8 tokens, windows of 3×3 (the map padded to 9×9) in the first two blocks, the
#: whole map in the third; two heads of 16
TINY = dict(
    img_size=64, patch_size=8, embed_dim=32, depth=3, num_heads=2, global_attn_indexes=[2], window_size=3
)
POSITIONS = {
    "relative": dict(use_rel_pos=True, use_abs_pos=True),
    "rope": dict(use_rel_pos=False, use_abs_pos=False, use_rope=True),
}


def build(positions: str = "relative", num_classes: int = 5) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(
        "samvit_base_patch16_224", **TINY, **POSITIONS[positions], num_classes=num_classes
    )
    draw(model, ("rel_pos_h", "rel_pos_w"), 0.1)  # timm starts them at zero
    return spread(model.eval(), ("attn.proj.weight", "mlp.fc2.weight", "head.fc.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


@pytest.mark.parametrize("positions", POSITIONS)
def test_the_twin_computes_what_timm_does(positions, inputs):
    prepared = assert_prepared_matches_in_float64(build(positions), inputs[1])
    assert sum(isinstance(m, ExplicitSamAttention) for m in prepared.modules()) == 3


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_samvit_converts(positions, options, inputs):
    """The patch embedding reads the image; two products per block; the neck (the classifying
    variant's: one channel LayerNorm) is an EC module."""
    snn = assert_converts(build(positions), *inputs, options, direct="patch_embed.proj", products=3 * 2)
    assert "neck" in {r.path for r in snn.report().by_role("ec")}


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build(), *inputs, outputs=("head.fc",))


def test_blocks_the_headless_encoder_and_round_trip(tmp_path, inputs):
    """blocks=k counts the blocks; the headless encoder with SAM's convolutional neck converts (its
    output, the neck's, is increments; the neck's convolutions get MT neurons); saved and loaded by
    the model's spec, the network keeps timm's keys."""
    calibration, x = inputs
    assert_blocks(build(), calibration, x, {1: ["blocks.1", "blocks.2", "neck", "head"], 3: []})
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=2), x.double())
    assert_converts(
        build(num_classes=0), calibration, x, {"neuron": "burst", "threshold": "mse"}, "patch_embed.proj", 6
    )
    spec = {"timm": "samvit_base_patch16_224", "kwargs": {**TINY, **POSITIONS["relative"], "num_classes": 5}}
    snn = transpike.convert(build(), calibration, method="sit", model_spec=spec)
    assert_round_trip(snn, build, x, tmp_path / "samvit.safetensors", by_spec=True)
