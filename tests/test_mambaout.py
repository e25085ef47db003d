"""timm's MambaOut: gated CNN blocks (the gate times the identity and convolved parts, a product of
spiking operands), the convolutional stem and downsamplers, the MLP head; the twin, conversion,
the one rate link, ``blocks=k`` and save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    random_images,
)
from timm.models.mambaout import MambaOut

from transpike.rules.timm_mambaout import ExplicitGatedConvBlock

#: 32 px images: the stem's 8 px map, then 4, 2 and 1 px stages of 1, 1, 2 and 1 gated blocks
SMALL = dict(num_classes=5, depths=(1, 1, 2, 1), dims=(8, 16, 24, 32))
VARIANTS = {
    "mambaout": {},
    "norm-first downsampling, no stem norm, LayerScale, half convolved": dict(
        downsample="conv_nf", stem_mid_norm=False, ls_init_value=0.5, conv_ratio=0.5
    ),
}


def build(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return MambaOut(**SMALL, **VARIANTS[variant]).eval()


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_prepared_computes_what_timm_does(variant, inputs):
    prepared = assert_prepared_matches_in_float64(build(variant), inputs[1])
    assert sum(isinstance(m, ExplicitGatedConvBlock) for m in prepared.modules()) == 5


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_mambaout_converts(variant, options, inputs):
    """The stem's first convolution reads the image; one gating product per block."""
    assert_converts(build(variant), *inputs, options, direct="stem.conv1", products=5, tolerance=0.2)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_module_passes_rates_like_increments(variant, inputs):
    """One link from the stem to the head's classifier."""
    assert_rates_up_to(build(variant), *inputs, outputs=("head.fc",))


def test_blocks_and_round_trip(tmp_path, inputs):
    analog = {
        2: ["stages.2.blocks.0", "stages.2.blocks.1", "stages.3", "head"],
        4: ["stages.3.blocks.0", "head"],
    }
    spec = {"timm": "mambaout_femto", "kwargs": SMALL}
    assert_blocks_and_round_trip(
        lambda: build("mambaout"), inputs, analog, tmp_path / "net.safetensors", spec
    )
