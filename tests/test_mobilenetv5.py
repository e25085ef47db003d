"""timm's MobileNetV5 (Gemma 3n's vision tower): MobileNetV4's blocks normed by RMS norms, and the
multi-scale fusion adapter over the last stages' outputs, which the converted model hands it packed
into one tensor; the classifier and the encoder, conversion, the one rate link, ``blocks=k`` (the
adapter left analog) and save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_links_keep_outputs,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    random_images,
)
from timm.layers import RmsNorm2d
from timm.models._efficientnet_builder import decode_arch_def
from timm.models.mobilenetv5 import MobileNetV5, MobileNetV5Encoder

import transpike
from transpike.rules.timm_mobilenetv4 import ExplicitMultiQueryAttention2d
from transpike.rules.timm_mobilenetv5 import JoinedFusionAdapter

#: at 32 px: the stem's 16 px map, a fused inverted residual to 8 px, then 4 px with a multi-query
#: attention whose key and value maps are downsampled to 2 px, then 2 px with a plain one; the
#: adapter fuses the last two stages' outputs at 4 px and pools them to 2 px
ARCH = [
    ["er_r1_k3_s2_e4_c16"],
    ["uir_r1_a3_k5_s2_e4_c24", "mqa_r1_k3_h2_s1_v2_d8_c24", "uir_r1_a0_k0_s1_e2_c24"],
    ["uir_r1_a5_k5_s2_e4_c32", "mqa_r1_k3_h2_s1_d8_c32", "uir_r1_a0_k0_s1_e2_c32"],
]
#: timm's MobileNetV5 settings but the sizes; layer scales at 0.5 (timm starts them at 1e-5, which
#: leaves a random-init network's output near zero after the blocks without a skip)
SETTINGS = dict(stem_size=8, msfa_output_resolution=2, norm_layer=RmsNorm2d, layer_scale_init_value=0.5)
VARIANTS = {
    "classifier": (MobileNetV5, dict(num_features=32, num_classes=5)),
    "encoder": (MobileNetV5Encoder, {}),
}


def build(variant: str = "classifier") -> torch.nn.Module:
    torch.manual_seed(0)
    cls, kwargs = VARIANTS[variant]
    return cls(decode_arch_def(ARCH), act_layer=torch.nn.GELU, **SETTINGS, **kwargs).eval()


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_prepared_computes_what_timm_does(variant, inputs):
    prepared = assert_prepared_matches_in_float64(build(variant), inputs[1])
    assert isinstance(prepared.msfa, JoinedFusionAdapter)
    assert sum(isinstance(m, ExplicitMultiQueryAttention2d) for m in prepared.modules()) == 2


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_mobilenetv5_converts(options, inputs):
    """The stem's convolution reads the image; Q·Kᵀ and attn·V in each of two attentions; the
    RMS norms are EC modules."""
    snn = assert_converts(build(), *inputs, options, direct="conv_stem.conv", products=2 * 2, tolerance=0.2)
    assert {"conv_stem.bn", "msfa.norm", "blocks.1.1.attn.key.norm"} <= {
        r.path for r in snn.report().by_role("ec")
    }


def test_the_encoder_converts(inputs):
    """Its output is the adapter's map (2048 channels at 2 px), no rate link."""
    assert_converts(build("encoder"), *inputs, {}, direct="conv_stem.conv", products=2 * 2, tolerance=0.2)


def test_every_module_passes_rates_like_increments(inputs):
    """One link from the stem to the classifier."""
    assert_rates_up_to(build(), *inputs, outputs=("classifier",))


def test_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts every stage's blocks in turn; left analog, the adapter reads the packed
    stage outputs, and the rate link is kept."""
    analog = {
        2: ["blocks.1.1", "blocks.1.2", "blocks.2", "msfa", "classifier"],
        6: ["blocks.2.2", "msfa", "classifier"],
    }
    assert_blocks_and_round_trip(build, inputs, analog, tmp_path / "net.safetensors")
    linked = transpike.convert(build().double(), inputs[0].double(), blocks=6)
    assert isinstance(linked.network.msfa.f, JoinedFusionAdapter)
    assert_links_keep_outputs(linked, inputs[1].double())
