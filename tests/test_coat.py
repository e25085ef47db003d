"""timm's CoaT-Lite: factorized attention (softmax over the tokens, Q·(softmax(K)ᵀ·V)) and the
convolutional relative position encoding Q ⊙ conv(V), convolutional position encodings, four
stages of patch embeddings; the position encodings each stage shares among its blocks become one
copy per block; the twins, conversion, rate links, ``blocks=k``, save/load and CoaT's parallel
blocks refused by path."""

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
from timm.models.coat import FactorAttnConvRelPosEnc

import transpike
from transpike import ConversionError, ConversionOptions, prepare
from transpike.rules.timm_coat import ExplicitConvRelPosEnc, ExplicitFactorAttn

#: at 64 px: 16×16, 8×8, 4×4 and 2×2 tokens plus a class token, one serial block per stage, eight
#: heads with timm's relative position windows (3, 5 and 7)
TINY = dict(img_size=64, embed_dims=[16, 32, 48, 64], serial_depths=[1, 1, 1, 1], num_heads=8)
TINY.update(mlp_ratios=[2, 2, 2, 2], num_classes=5)


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("coat_lite_tiny", **TINY).eval()
    return spread(model, ("factoratt_crpe.proj.weight", "mlp.fc2.weight", "head.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


def test_the_twins_compute_what_timm_does_with_a_copy_per_block(inputs):
    model = build()
    assert_twin_matches(model, inputs[1], FactorAttnConvRelPosEnc, ExplicitFactorAttn, 4)
    prepared = prepare(model, ConversionOptions())
    blocks = [prepared.get_submodule(f"serial_blocks{s}.0") for s in range(1, 5)]
    assert all(isinstance(block.factoratt_crpe.crpe, ExplicitConvRelPosEnc) for block in blocks)
    assert model.serial_blocks1[0].cpe is model.cpe1  # shared in timm, one per block converted
    assert prepared.serial_blocks1[0].cpe is not prepared.cpe1


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_coat_lite_converts(options, inputs):
    """The first patch embedding reads the image, the later ones spike; 4 blocks × 3 products."""
    snn = assert_converts(build(), *inputs, options, direct="patch_embed1.proj", products=4 * 3)
    weights = {r.path for r in snn.report().by_role("mt+weight")}
    assert {
        "patch_embed2.proj",
        "serial_blocks1.0.cpe.proj",
        "serial_blocks1.0.factoratt_crpe.crpe.conv_list.1",
    } <= (weights)


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build(), *inputs)


def test_blocks_count_serial_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts the serial blocks stage by stage; a later stage's patch embedding, before
    all blocks in timm's layout, converts. Saved and loaded by the model's spec, the network keeps
    timm's keys (the blocks' copies under the paths timm lists them at)."""
    calibration, x = inputs
    expected = {1: ["serial_blocks2.0", "serial_blocks3.0", "serial_blocks4.0", "norm4", "head"], 4: []}
    assert_blocks(build(), calibration, x, expected)
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=2), x.double())
    spec = {"timm": "coat_lite_tiny", "kwargs": TINY}
    snn = transpike.convert(build(), calibration, method="sit", model_spec=spec)
    assert_round_trip(snn, build, x, tmp_path / "coat.safetensors", by_spec=True)


def test_parallel_blocks_are_refused_by_path(inputs):
    model = timm.create_model("coat_tiny", img_size=64, num_classes=5).eval()
    with pytest.raises(
        ConversionError, match=r"^parallel_blocks.0 \(timm.models.coat.ParallelBlock\): CoaT's par"
    ):
        transpike.convert(model, inputs[0])
