"""timm's MaxxVit class: MaxViT (the TensorFlow ports' layout: q, k and v interleaved, the lookup
bias, "same" padding; timm's parallel block; attention on NCHW maps), CoAtNet (convolution, then
Transformer blocks over the whole map, one of them downsampling) and MaxxViT (ConvNeXt blocks, an
MLP position bias, grid attention only); the twins, conversion, rate links, ``blocks=k`` and
save/load."""

import numpy as np
import pytest
import timm
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks,
    assert_converts,
    assert_rates_up_to,
    assert_round_trip,
    assert_twin_matches,
    draw,
    random_images,
    spread,
)
from PIL import Image
from timm.models.maxxvit import Attention2d, AttentionCl

import transpike
from transpike import ConversionError, ConversionOptions, prepare
from transpike.data import load_dataset
from transpike.rules.squeeze_excite import ExplicitSqueezeExcite
from transpike.rules.timm_maxxvit import ExplicitMaxxAttention

#: two stages at 32 px (8×8, then 4×4 maps), partitions of 2×2; the keyword arguments overlay the
#: named model's configuration (timm's ``transformer_`` and ``conv_`` prefixes)
SMALL = dict(img_size=32, num_classes=5, embed_dim=[16, 32], stem_width=[8, 16], transformer_dim_head=8)
KINDS = {
    # (model, its overlay, weights drawn large, [attentions, squeeze-and-excitations])
    "maxvit_tf": (
        "maxvit_tiny_tf_224",
        dict(depths=[1, 2], transformer_window_size=[2, 2], head_hidden_size=32),
        ("head.fc.weight",),
        [6, 3],
    ),
    "parallel_nchw": (
        "maxvit_tiny_pm_256",
        dict(
            depths=[1, 1],
            block_type=["PM", "M"],
            transformer_window_size=[2, 2],
            transformer_use_nchw_attn=True,
            conv_attn_layer="ese",
            transformer_rel_pos_type="mlp",
            transformer_rel_pos_dim=16,
        ),
        ("proj.weight", "fc2.weight", "conv3_1x1.weight", "head.fc.weight"),
        [4, 3],  # the parallel block opens with two MBConv blocks
    ),
    "coatnet": (
        "coatnet_nano_rw_224",
        dict(depths=[1, 2], block_type=["C", "T"]),
        ("proj.weight", "fc2.weight", "conv3_1x1.weight", "head.fc.weight"),
        [2, 1],
    ),
    "maxxvit": (
        "maxxvitv2_nano_rw_256",
        dict(
            depths=[1, 1],
            transformer_window_size=[2, 2],
            transformer_init_values=1.0,
            conv_init_values=1.0,
            transformer_rel_pos_type="mlp",
            transformer_rel_pos_dim=16,
        ),
        ("proj.weight", "fc2.weight", "head.fc.weight"),
        [2, 0],
    ),
}


def build(kind: str) -> torch.nn.Module:
    """A small random-init model whose attention matters: the bias tables spread out, q and k
    scaled up, some branches' last layers drawn large."""
    name, overlay, drawn, _ = KINDS[kind]
    torch.manual_seed(0)
    model = draw(timm.create_model(name, **SMALL, **overlay).eval(), "relative_position_bias_table", 1.0)
    return spread(model, drawn)


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32)


@pytest.mark.parametrize("kind", KINDS)
def test_the_twins_compute_what_timm_does(kind, inputs):
    attentions, squeezes = KINDS[kind][3]
    model = build(kind)
    assert_twin_matches(model, inputs[1], (AttentionCl, Attention2d), ExplicitMaxxAttention, attentions)
    prepared = prepare(model, ConversionOptions())
    assert sum(isinstance(m, ExplicitSqueezeExcite) for m in prepared.modules()) == squeezes


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_maxxvit_converts(kind, options, inputs):
    """The stem's first convolution reads the image; each attention has two products and each
    squeeze-and-excitation one; the position biases are constants."""
    attentions, squeezes = KINDS[kind][3]
    snn = assert_converts(
        build(kind), *inputs, options, direct="stem.conv1", products=2 * attentions + squeezes
    )
    assert len(snn.report().by_role("constant")) == attentions


@pytest.mark.parametrize("kind", KINDS)
def test_every_module_passes_rates_like_increments(kind, inputs):
    assert_rates_up_to(build(kind), *inputs, outputs=("head.fc",))


def test_blocks_count_every_stages_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts CoAtNet's convolution block, then its Transformer blocks; from the first
    analog block on, everything stays analog; saved and loaded by the model's spec (name and
    overlay), the network keeps timm's keys."""
    calibration, x = inputs
    expected = {
        1: ["stages.1.blocks.0", "stages.1.blocks.1", "norm", "head"],
        2: ["stages.1.blocks.1", "norm", "head"],
        3: [],
    }
    assert_blocks(build("coatnet"), calibration, x, expected)
    name, overlay, _, _ = KINDS["maxvit_tf"]
    snn = transpike.convert(
        build("maxvit_tf"),
        calibration,
        method="sit",
        model_spec={"timm": name, "kwargs": {**SMALL, **overlay}},
    )
    assert_round_trip(snn, lambda: build("maxvit_tf"), x, tmp_path / "maxvit.safetensors", by_spec=True)


def test_a_squeeze_with_a_max_is_refused_by_path(inputs):
    model = build("coatnet")
    model.stages[0].blocks[0].se.add_maxpool = True
    with pytest.raises(ConversionError, match="add_maxpool") as error:
        transpike.convert(model, inputs[0])
    assert "stages.0.blocks.0.se (timm.layers.squeeze_excite.SEModule)" in str(error.value)


def test_image_folders_are_preprocessed_at_the_size_the_model_was_built_for(tmp_path):
    """The model's timm data config says 224 px (its pretrained size); it was built for 32."""
    (tmp_path / "cat").mkdir()
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(tmp_path / "cat" / "0.png")
    model = build("coatnet")
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)
    image, _ = load_dataset(f"imagefolder:{tmp_path}", model=model)[0]
    assert image.shape == (3, 32, 32)
