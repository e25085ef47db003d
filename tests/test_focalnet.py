"""timm's FocalNet: focal modulation (gated contexts of L levels and a global one, q times the
modulator: products of spiking operands), pre- or post-norm blocks with LayerScale, overlapping
downsampling, the linear or MLP head; the twin, conversion, the one rate link, ``blocks=k`` and
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
from timm.models.focalnet import FocalModulation, FocalNet

from transpike.rules.timm_focalnet import ExplicitFocalModulation

#: 32 px images: an 8×8 map, then 4×4; two focal levels (3×3 and 5×5 depthwise convolutions)
SMALL = dict(embed_dim=16, depths=(1, 1), focal_levels=(2, 2), focal_windows=(3, 3), num_classes=5)
VARIANTS = {
    "pre-norm": dict(),
    "post-norm, LayerScale, overlapping": dict(
        use_post_norm=True,
        use_post_norm_in_modulation=True,
        use_overlap_down=True,
        layerscale_value=0.5,
        normalize_modulator=True,
    ),
    "MLP head": dict(head_hidden_size=32),
}


def build(variant: str) -> torch.nn.Module:
    """A small random-init FocalNet whose modulation matters: its output projections and the head
    drawn with std 0.3."""
    torch.manual_seed(0)
    model = FocalNet(**SMALL, **VARIANTS[variant]).eval()
    return spread(
        model, ("modulation.proj.weight", "mlp.fc2.weight", "head.fc.weight"), scaled=("modulation.f.weight",)
    )


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_twin_computes_what_timm_does(variant, inputs):
    assert_twin_matches(build(variant), inputs[1], FocalModulation, ExplicitFocalModulation, 2)
    assert_prepared_matches_in_float64(build(variant), inputs[1])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_focalnet_converts(variant, options, inputs):
    """The stem's convolution reads the image; per block, three gated contexts and q × modulator."""
    assert_converts(build(variant), *inputs, options, direct="stem.proj", products=2 * 4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_module_passes_rates_like_increments(variant, inputs):
    """One link from the stem to the head's classifier."""
    assert_rates_up_to(build(variant), *inputs, outputs=("head.fc",))


def test_blocks_and_round_trip(tmp_path, inputs):
    # after the first analog block, a stage is analog whole; with k = 1 the second stage's
    # downsampling, before its blocks, is converted
    analog = {0: ["layers.0.blocks.0", "layers.1", "norm", "head"], 1: ["layers.1.blocks.0", "norm", "head"]}
    assert_blocks_and_round_trip(lambda: build("pre-norm"), inputs, analog, tmp_path / "net.safetensors")
