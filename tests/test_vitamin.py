"""timm's ViTamin: a ViT behind a hybrid embedding of MBConv stages with LayerNorm, and GeGLU MLPs
with a norm of their own; the twin, conversion, rate links, ``blocks=k`` and save/load."""

import pytest
import timm
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
from timm.models.vitamin import VitCfg, VitConvCfg

from transpike.rules.timm_vitamin import ExplicitGeGluMlp

#: at 64 px: a stem and two MBConv stages of one block to a 4 × 4 map (16 tokens), two ViT blocks
EMBED = VitCfg(embed_dim=(8, 16, 24), depths=(1, 1, 1), stem_width=8, head_type="1d")
EMBED.conv_cfg = VitConvCfg(norm_layer="layernorm2d", norm_eps=1e-6)
TINY = dict(img_size=64, embed_dim=24, depth=2, num_heads=2, num_classes=5, embed_cfg=EMBED)


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("vitamin_small_224", **TINY).eval()
    return spread(model, ("attn.proj.weight", "mlp.w2.weight", "head.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


def test_the_twin_computes_what_timm_does(inputs):
    prepared = assert_prepared_matches_in_float64(build(), inputs[1])
    assert sum(isinstance(m, ExplicitGeGluMlp) for m in prepared.modules()) == 2


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_vitamin_converts(options, inputs):
    """The stem's first convolution reads the image; two products per attention and one per
    GeGLU MLP."""
    direct = "patch_embed.backbone.stem.conv1"
    assert_converts(build(), *inputs, options, direct=direct, products=2 * 3)


def test_every_module_passes_rates_like_increments(inputs):
    """The MBConv stages up to the patch projection, the ViT's stream and each MLP pass rates."""
    assert_rates_up_to(build(), *inputs)


def test_blocks_and_round_trip(tmp_path, inputs):
    analog = {1: ["blocks.1", "fc_norm", "head"]}  # mean pooling: fc_norm
    assert_blocks_and_round_trip(build, inputs, analog, tmp_path / "net.safetensors")
