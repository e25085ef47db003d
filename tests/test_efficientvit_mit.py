"""timm's EfficientViT from MIT (B and L series): multi-scale linear attention with ReLU kernels
and the normalizer as a last column; the twin, conversion, rate links, ``blocks=k`` and
save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_rates_up_to,
    assert_twin_matches,
    random_images,
    spread,
)
from timm.models.efficientvit_mit import EfficientVit, EfficientVitLarge

from transpike.rules.timm_efficientvit_mit import ExplicitLiteMLA

#: at 64 px: a stem at 32 × 32, then stages at 16, 8, 4 and 2 pixels, the last two with attention
TINY = dict(widths=(8, 8, 16, 16, 24), depths=(1, 1, 1, 1, 1), head_dim=8, head_widths=(32, 40))
TINY.update(num_classes=5)
MODELS = {"B": EfficientVit, "L": EfficientVitLarge}
ATTENTIONS = {"B": 2, "L": 1}  # the B series attends in its last two stages, the L series in its last


def build(variant: str) -> torch.nn.Module:
    """B with its attention and branches spread; L as timm draws it: its blocks have no norm
    before the attention and few BatchNorms, so drawn branches grow its map block after block
    (0.40 off the ANN at t = 32 with the paper default, 0.018 with burst neurons)."""
    torch.manual_seed(0)
    model = MODELS[variant](**TINY).eval()
    if variant == "L":
        return model
    return spread(model, ("proj.conv.weight", "classifier.4.weight"), scaled=("qkv.conv.weight",))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


@pytest.mark.parametrize("variant", MODELS)
def test_the_twin_computes_what_timm_does(variant, inputs):
    assert_twin_matches(build(variant), inputs[1], (), ExplicitLiteMLA, ATTENTIONS[variant])


@pytest.mark.parametrize("variant", MODELS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_efficientvit_converts(variant, options, inputs):
    """The stem's convolution reads the image; three products per attention (kᵀ·v, q times it,
    q times Σk); each attention's kernels and normalization are EC modules."""
    products = 3 * ATTENTIONS[variant]
    snn = assert_converts(build(variant), *inputs, options, direct="stem.in_conv.conv", products=products)
    ec = {r.path for r in snn.report().by_role("ec")}
    attn = "stages.3.blocks.1.context_module.main"
    assert {f"{attn}.kernel_func", f"{attn}.k_kernel", f"{attn}.normalize"} <= ec


@pytest.mark.parametrize("variant", MODELS)
def test_every_module_passes_rates_like_increments(variant, inputs):
    assert_rates_up_to(build(variant), *inputs, outputs=("head.classifier.4",))


def test_blocks_and_round_trip(tmp_path, inputs):
    assert_blocks_and_round_trip(
        lambda: build("B"),
        inputs,
        {3: ["stages.2.blocks.1", "stages.3", "head"]},
        tmp_path / "net.safetensors",
    )
