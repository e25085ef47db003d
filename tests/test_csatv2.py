"""timm's CSATv2: the DCT stem (the input; its three convolutions read the image), ConvNeXt blocks
times a spatial attention map (channel mean and max, a convolution, a one-channel Transformer
block that is x + c), ViT blocks with a convolutional position encoding; the twins, conversion,
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
from timm.models.csatv2 import CSATv2, SpatialTransformerBlock

from transpike.rules.timm_csatv2 import ExplicitCsatBlock, OffsetSpatialBlock

#: 64 px images: DCT blocks of 8 px give an 8 px map, then 4, 2 and 1 px stages; a ConvNeXt block
#: in each stage, a Transformer block after it in the last two
SMALL = dict(num_classes=5, dims=(8, 16, 24, 32), depths=(1, 1, 2, 2), transformer_depths=(0, 0, 1, 1))
VARIANTS = {"plain": {}, "LayerScale": dict(ls_init_value=0.5)}


def build(variant: str) -> torch.nn.Module:
    """A small random-init CSATv2 whose attention map matters: its spatial Transformer blocks'
    norm biases and its convolutions drawn; and whose global response norms do (timm starts
    their gains at 0, which makes them the identity)."""
    torch.manual_seed(0)
    model = CSATv2(**SMALL, **VARIANTS[variant]).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".attn.attn." in name or name.endswith(("attn.conv.weight", "qkv.weight")):
                parameter.normal_(0, 0.5)
            elif name.endswith("grn.weight"):
                parameter.fill_(1.0)
    return model


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64)


def test_the_spatial_transformer_block_adds_a_constant():
    """Its LayerNorms over one channel return their biases: block(x) - x is the same for any x."""
    torch.manual_seed(0)
    block = SpatialTransformerBlock().double().eval()
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_()
        x = torch.randn(3, 1, 7, 7, dtype=torch.float64)
        offsets = block(x) - x, block(5 * x + 1) - (5 * x + 1)
    torch.testing.assert_close(offsets[0], offsets[1], rtol=1e-12, atol=1e-12)
    assert offsets[0].abs().max() > 0.1


@pytest.mark.parametrize("variant", VARIANTS)
def test_prepared_computes_what_timm_does(variant, inputs):
    prepared = assert_prepared_matches_in_float64(build(variant), inputs[1])
    assert sum(isinstance(m, ExplicitCsatBlock) for m in prepared.modules()) == 4
    assert sum(isinstance(m, OffsetSpatialBlock) for m in prepared.modules()) == 4


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_csatv2_converts(variant, options, inputs):
    """The stem's three convolutions read the image; each ConvNeXt block's product with its map,
    Q·Kᵀ and attn·V in each Transformer block."""
    direct = ("stem_dct.conv_y", "stem_dct.conv_cb", "stem_dct.conv_cr")
    snn = assert_converts(build(variant), *inputs, options, direct=direct, products=4 + 2 * 2, tolerance=0.2)
    assert [r.path for r in snn.report().rows if r.role == "constant"] == [
        f"stages.{s}.{b}.attn.attn.branches" for s, b in ((0, 0), (1, 1), (2, 1), (3, 1))
    ]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_module_passes_rates_like_increments(variant, inputs):
    """One link from the stem to the head's classifier."""
    assert_rates_up_to(build(variant), *inputs, outputs=("head.fc",))


def test_blocks_and_round_trip(tmp_path, inputs):
    analog = {
        2: ["stages.2.1", "stages.2.2", "stages.2.3", "stages.3", "head"],
        5: ["stages.3.2", "head"],
    }
    spec = {"timm": "csatv2", "kwargs": SMALL}
    assert_blocks_and_round_trip(lambda: build("plain"), inputs, analog, tmp_path / "net.safetensors", spec)
