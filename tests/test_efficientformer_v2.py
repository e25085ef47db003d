"""timm's EfficientFormerV2: attention on 4D maps with talking heads and a bias per pixel offset,
on a map halved by a strided convolution and upsampled back, and in the downsampling between
stages; the twin, conversion, rate links, ``blocks=k`` and save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    draw,
    random_images,
)
from timm.models.efficientformer_v2 import EfficientFormerV2

from transpike.rules.timm_efficientformer_v2 import ExplicitAttention2d

#: at 64 px: a stem to 16 × 16, then 8 × 8, then 4 × 4 (its last block attends on the map halved
#: to 2 × 2 and upsampled), then a downsampling with attention to 2 × 2 and a block attending there
TINY = dict(depths=(1, 1, 2, 2), embed_dims=(8, 16, 24, 32), num_vit=1, img_size=64, num_classes=5)


def build(distillation: bool = True) -> torch.nn.Module:
    """LayerScale 0.5 (timm: 1e-5, which would hide the branches) and the offset biases drawn
    (timm: zeros)."""
    torch.manual_seed(0)
    model = EfficientFormerV2(**TINY, layer_scale_init_value=0.5, distillation=distillation).eval()
    return draw(model, "attention_biases", 1.0)


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


def test_the_twin_computes_what_timm_does(inputs):
    prepared = assert_prepared_matches_in_float64(build(), inputs[1])
    attentions = [m for m in prepared.modules() if isinstance(m, ExplicitAttention2d)]
    assert len(attentions) == 3
    assert sum(a.upsample is not None for a in attentions) == 1  # the strided one


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_efficientformer_v2_converts(options, inputs):
    """The stem's first convolution reads the image; two products per attention; the talking
    heads are weight layers with MT neurons."""
    snn = assert_converts(build(), *inputs, options, direct="stem.conv1.conv", products=3 * 2)
    weights = {r.path for r in snn.report().by_role("mt+weight")}
    assert {f"stages.2.blocks.1.token_mixer.talking_head{i}" for i in (1, 2)} <= weights


@pytest.mark.parametrize("distillation", [True, False])
def test_every_module_passes_rates_like_increments(distillation, inputs):
    heads = ("head", "head_dist") if distillation else ("head",)
    assert_rates_up_to(build(distillation), *inputs, outputs=heads)


def test_blocks_and_round_trip(tmp_path, inputs):
    after = ["head", "head_dist"]  # the final BatchNorm, affine, stays as it is
    assert_blocks_and_round_trip(
        build, inputs, {3: ["stages.2.blocks.1", "stages.3", *after]}, tmp_path / "net.safetensors"
    )
