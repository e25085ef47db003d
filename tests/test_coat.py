"""timm's CoaT-Lite and CoaT: factorized attention (softmax over the tokens, Q·(softmax(K)ᵀ·V))
and the convolutional relative position encoding Q ⊙ conv(V), convolutional position encodings,
four stages of patch embeddings; the position encodings each stage shares among its blocks become
one copy per block; CoaT's parallel blocks over scales 2-4 (each with its own copies of the
encodings timm's model runs before every one of them) and its head aggregating the scales; the
twins, conversion, rate links, ``blocks=k`` and save/load."""

import pytest
import timm
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_links_keep_outputs,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    assert_round_trip,
    assert_twin_matches,
    random_images,
    spread,
)
from timm.models.coat import FactorAttnConvRelPosEnc

import transpike
from transpike import ConversionError, ConversionOptions, prepare
from transpike.rules.timm_coat import ExplicitConvRelPosEnc, ExplicitFactorAttn, JoinedParallelBlock

#: at 64 px: 16×16, 8×8, 4×4 and 2×2 tokens plus a class token, one serial block per stage, eight
#: heads with timm's relative position windows (3, 5 and 7)
TINY = dict(img_size=64, embed_dims=[16, 32, 48, 64], serial_depths=[1, 1, 1, 1], num_heads=8)
TINY.update(mlp_ratios=[2, 2, 2, 2], num_classes=5)
#: CoaT: the same serial stages (scales 2-4 as wide, as timm requires), then two parallel blocks
PARALLEL = {**TINY, "embed_dims": [16, 32, 32, 32], "parallel_depth": 2}


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("coat_lite_tiny", **TINY).eval()
    return spread(model, ("factoratt_crpe.proj.weight", "mlp.fc2.weight", "head.weight"))


def build_parallel() -> torch.nn.Module:
    """A small CoaT whose branches matter: the parallel blocks' attention projections and MLPs too."""
    torch.manual_seed(0)
    model = timm.create_model("coat_tiny", **PARALLEL).eval()
    drawn = ("factoratt_crpe.proj.weight", "factoratt_crpe2.proj.weight", "factoratt_crpe3.proj.weight")
    return spread(model, (*drawn, "factoratt_crpe4.proj.weight", "fc2.weight", "head.weight"))


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


def test_parallel_blocks_run_their_own_encodings(inputs):
    """Each parallel block runs its own copies of the model's position encodings of scales 2-4
    (timm's model runs its one copy before every block), and its MLP one copy per scale (shared in
    timm); the prepared copy computes what timm does."""
    model = build_parallel()
    assert_twin_matches(model, inputs[1], FactorAttnConvRelPosEnc, ExplicitFactorAttn, 4 + 2 * 3)
    prepared = assert_prepared_matches_in_float64(build_parallel(), inputs[1])
    blocks = [prepared.get_submodule(f"parallel_blocks.{i}") for i in range(2)]
    assert all(isinstance(block, JoinedParallelBlock) for block in blocks)
    encodings = [block.cpe2 for block in blocks] + [prepared.cpe2]
    assert len({id(cpe) for cpe in encodings}) == 3
    weights = [p.double() for p in model.cpe2.parameters()]
    assert all(all(map(torch.equal, cpe.parameters(), weights)) for cpe in encodings)
    assert (
        blocks[0].mlp2 is not blocks[0].mlp3
        and model.parallel_blocks[0].mlp2 is model.parallel_blocks[0].mlp3
    )


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_coat_converts(options, inputs):
    """4 serial blocks × 3 products, then 2 parallel blocks × 3 scales × 3; the head's aggregation
    of the three scales' class tokens is a weight layer."""
    snn = assert_converts(
        build_parallel(), *inputs, options, direct="patch_embed1.proj", products=4 * 3 + 2 * 9
    )
    weights = {r.path for r in snn.report().by_role("mt+weight")}
    assert {"aggregate", "head", "parallel_blocks.1.cpe4.proj", "parallel_blocks.0.mlp3.fc1"} <= weights
    assert {r.path for r in snn.report().by_role("constant")} >= {"cpe2", "cpe3", "cpe4"}


def test_coat_passes_rates_like_increments(inputs):
    assert_rates_up_to(build_parallel(), *inputs)


def test_blocks_count_parallel_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts the parallel blocks after the serial ones; a parallel block left analog
    takes the packed scales; saved and loaded by the model's spec, each block's copies of the
    encodings are under the model's keys."""
    after = ["norm2", "norm3", "norm4", "aggregate", "head"]
    analog = {2: ["serial_blocks3.0", "serial_blocks4.0", "parallel_blocks.0", "parallel_blocks.1", *after]}
    analog[5] = ["parallel_blocks.1", *after]
    spec = {"timm": "coat_tiny", "kwargs": PARALLEL}
    assert_blocks_and_round_trip(build_parallel, inputs, analog, tmp_path / "coat.safetensors", spec)
    linked = transpike.convert(build_parallel().double(), inputs[0].double(), blocks=5)
    assert isinstance(linked.network.parallel_blocks[1].f, JoinedParallelBlock)
    assert_links_keep_outputs(linked, inputs[1].double())


def test_a_model_built_for_feature_maps_is_refused():
    model = timm.create_model("coat_tiny", img_size=64, num_classes=5, return_interm_layers=True)
    with pytest.raises(
        ConversionError, match=r"^<root> \(timm.models.coat.CoaT\): return_interm_layers=True"
    ):
        transpike.convert(model.eval(), random_images(64)[0])
