"""timm's SwiftFormer: efficient additive attention (L2-normalized q and k, one score per token
normalized over the tokens, a global query multiplying every key), convolution encoders, two
heads averaged; the twin, conversion, rate links, ``blocks=k`` and save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    random_images,
    spread,
)
from timm.models.swiftformer import SwiftFormer

from transpike.rules.timm_swiftformer import ExplicitAdditiveAttention

#: at 32 px: a stem to 8 × 8, a convolution encoder and the attention block, then a downsampling
#: to 4 × 4 and an attention block; LayerScale 0.5 (timm: 1e-5, which would hide the branches)
TINY = dict(layers=[2, 1], embed_dims=[16, 24], downsamples=[False, True], layer_scale_init_value=0.5)
TINY.update(num_classes=5)


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    return spread(SwiftFormer(**TINY).eval(), ("attn.final.weight", "head.weight", "head_dist.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32, (16, 4))


def test_the_twin_computes_what_timm_does(inputs):
    prepared = assert_prepared_matches_in_float64(build(), inputs[1])
    assert sum(isinstance(m, ExplicitAdditiveAttention) for m in prepared.modules()) == 2


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_swiftformer_converts(options, inputs):
    """The stem's first convolution reads the image; two products per attention (the global
    query's pooling and its product with the keys); the three L2 normalizations are EC modules."""
    snn = assert_converts(build(), *inputs, options, direct="stem.0", products=2 * 2)
    ec = {r.path for r in snn.report().by_role("ec")}
    assert {f"stages.1.blocks.0.attn.{name}" for name in ("query_norm", "key_norm", "score_norm")} <= ec


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build(), *inputs, outputs=("head", "head_dist"))


def test_blocks_and_round_trip(tmp_path, inputs):
    after = ["head", "head_dist"]  # the final BatchNorm, affine, stays as it is
    assert_blocks_and_round_trip(
        build, inputs, {1: ["stages.0.blocks.1", "stages.1", *after]}, tmp_path / "net.safetensors"
    )
