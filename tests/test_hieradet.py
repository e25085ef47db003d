"""timm's HieraDet (SAM 2's Hiera): windowed and global attention on channels-last maps, q and the
residual max-pooled where a stage begins (``nn.MaxPool2d`` modules), zero-padded windows, the
convolutional or ViT-style patch embedding; the twin, conversion, rate links, ``blocks=k`` and
save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    assert_twin_matches,
    random_images,
    spread,
)
from timm.models.hieradet_sam2 import HieraDet, MultiScaleAttention

from transpike.rules.timm_hieradet import ExplicitMultiScaleAttention

#: 32 px images, an 8×8 map: windows of 4, then of 2 on the pooled 4×4 map, where the second block is global
SMALL = dict(
    embed_dim=16, num_heads=1, stages=(1, 2, 1), q_pool=2, window_spec=(4, 2, 2), global_att_blocks=(2,),
    global_pos_size=(4, 4), num_classes=5,
)  # fmt: skip
VARIANTS = {
    "convolution": dict(),
    "padded windows, LayerScale": dict(window_spec=(4, 3, 2), init_values=0.5),  # 3 on the 4×4 map
    "ViT patches": dict(patch_size=(4, 4)),
}


def build(variant: str) -> torch.nn.Module:
    """A small random-init HieraDet whose attention and head matter (timm starts the head at 0.001
    of its init)."""
    torch.manual_seed(0)
    model = HieraDet(**{**SMALL, **VARIANTS[variant]}).eval()
    return spread(model, ("attn.proj.weight", "mlp.fc2.weight", "head.fc.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_twin_computes_what_timm_does(variant, inputs):
    assert_twin_matches(build(variant), inputs[1], MultiScaleAttention, ExplicitMultiScaleAttention, 4)
    assert_prepared_matches_in_float64(build(variant), inputs[1])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_hieradet_converts(variant, options, inputs):
    """The patch embedding reads the image; two products per block; the four max pools (q and the
    residual at two stage starts) are EC modules."""
    snn = assert_converts(build(variant), *inputs, options, direct="patch_embed.proj", products=2 * 4)
    pools = [r.path for r in snn.report().rows if r.path.endswith("pool")]
    assert pools == ["blocks.1.pool", "blocks.1.attn.q_pool", "blocks.3.pool", "blocks.3.attn.q_pool"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_module_passes_rates_like_increments(variant, inputs):
    """One link from the patch embedding to the head's classifier."""
    assert_rates_up_to(build(variant), *inputs, outputs=("head.fc",))


def test_blocks_and_round_trip(tmp_path, inputs):
    assert_blocks_and_round_trip(
        lambda: build("convolution"),
        inputs,
        {k: [f"blocks.{i}" for i in range(k, 4)] + ["head"] for k in (1, 3)},
        tmp_path / "net.safetensors",
    )
