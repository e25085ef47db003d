"""timm's PiT: three stages of ViT blocks, pooling layers between them (a strided depthwise
convolution on the token map, a Linear on the class tokens), plain and distilled; the stages
joined into one tensor, conversion, rate links, ``blocks=k`` and save/load."""

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

import transpike
from transpike.rules.timm_pit import JoinedTransformer

#: at 64 px: patches of 8 with stride 4 (15×15), pooled to 8×8 and 4×4; 1, 2 and 1 blocks of
#: 1, 2 and 4 heads of 8 channels
TINY = dict(img_size=64, patch_size=8, stride=4, base_dims=[8, 8, 8], depth=[1, 2, 1], heads=[1, 2, 4])
TINY.update(num_classes=5)
KINDS = {"plain": "pit_ti_224", "distilled": "pit_ti_distilled_224"}


def build(kind: str = "plain") -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(KINDS[kind], **TINY).eval()
    return spread(model, ("attn.proj.weight", "mlp.fc2.weight", "head.weight", "head_dist.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


@pytest.mark.parametrize("kind", KINDS)
def test_the_joined_stages_compute_what_timm_does(kind, inputs):
    prepared = assert_prepared_matches_in_float64(build(kind), inputs[1])
    stages = [prepared.get_submodule(f"transformers.{s}") for s in range(3)]
    assert all(isinstance(stage, JoinedTransformer) for stage in stages)
    assert [stage.grid for stage in stages] == [(15, 15), (15, 15), (8, 8)]  # before each stage's pooling


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_pit_converts(kind, options, inputs):
    """The patch embedding reads the image; each pooling layer's convolution and Linear get MT
    neurons; two products per block. With one spike per step this tiny random PiT converges
    slower than the other families' (0.13-0.21 at t = 32 across calibration and evaluation draws;
    at full size it is below vit_tiny's error from t = 2, BENCHMARKS.md §1): tolerance 0.25."""
    snn = assert_converts(
        build(kind), *inputs, options, direct="patch_embed.conv", products=4 * 2, tolerance=0.25
    )
    weights = {r.path for r in snn.report().by_role("mt+weight")}
    assert {"transformers.1.pool.conv", "transformers.1.pool.fc", "transformers.2.pool.conv"} <= weights


@pytest.mark.parametrize("kind", KINDS)
def test_every_module_passes_rates_like_increments(kind, inputs):
    assert_rates_up_to(build(kind), *inputs, outputs=("head",) if kind == "plain" else ("head", "head_dist"))


def test_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts the blocks stage by stage; a stage with no converted block stays analog
    whole (it takes the joined tensor); saved and loaded by the model's spec, the network keeps
    timm's keys."""
    calibration, x = inputs
    tail = ["norm", "head", "head_dist"]
    expected = {
        1: ["transformers.1.blocks.0", "transformers.1.blocks.1", "transformers.2", *tail],
        3: ["transformers.2.blocks.0", *tail],
        4: [],
    }
    linked = transpike.convert(build("distilled").double(), calibration.double(), blocks=2)
    assert_links_keep_outputs(linked, x.double())
    spec = {"timm": KINDS["distilled"], "kwargs": TINY}
    path = tmp_path / "pit.safetensors"  # tolerance: see test_pit_converts
    assert_blocks_and_round_trip(lambda: build("distilled"), inputs, expected, path, spec, tolerance=0.02)
