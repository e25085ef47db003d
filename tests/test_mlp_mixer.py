"""timm's all-MLP token mixers: MLP-Mixer (and its GLU variant), ResMLP (Affine norms, LayerScale)
and gMLP (the spatial gating unit's product); the twin, conversion, the one rate link, ``blocks=k``
and save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    assert_twin_matches,
    draw,
)
from timm.layers import GatedMlp, GluMlp
from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock, SpatialGatingBlock, SpatialGatingUnit
from torch import nn

from transpike.rules.timm_mlp_mixer import SpatialGating

SMALL = dict(img_size=16, patch_size=4, embed_dim=24, num_blocks=2, num_classes=5)
#: timm's configurations of its registered models, at SMALL's size
VARIANTS = {
    "Mixer": dict(),
    "GLU Mixer": dict(mlp_ratio=(1.0, 4.0), mlp_layer=GluMlp, act_layer=nn.SiLU),
    "ResMLP": dict(mlp_ratio=4, block_layer=ResBlock, norm_layer=Affine),
    "gMLP": dict(mlp_ratio=6, block_layer=SpatialGatingBlock, mlp_layer=GatedMlp),
}
#: products of two spiking operands per block
PRODUCTS = {"Mixer": 0, "GLU Mixer": 2, "ResMLP": 0, "gMLP": 1}


def build(name: str) -> torch.nn.Module:
    """A small random-init model whose blocks matter: ResMLP's LayerScale 0.5 (timm: 1e-4), gMLP's
    token projection drawn (timm starts it at 1e-6, a gate of ones), the branches' last layers
    spread."""
    torch.manual_seed(0)
    model = MlpMixer(**SMALL, **VARIANTS[name]).eval()
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith(("ls1", "ls2")):
                parameter.fill_(0.5)
    return draw(model, ("gate.proj.weight", "fc2.weight", "linear_tokens.weight", "head.weight"), 0.3)


@pytest.mark.parametrize("name", VARIANTS)
def test_prepared_computes_what_timm_does(name, images):
    assert_prepared_matches_in_float64(build(name), images[1])


def test_the_gating_twin_computes_what_timm_does(images):
    assert_twin_matches(build("gMLP"), images[1], SpatialGatingUnit, SpatialGating, 2)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_mlp_mixer_converts(name, options, images):
    assert_converts(build(name), *images, options, direct="stem.proj", products=2 * PRODUCTS[name])


@pytest.mark.parametrize("name", VARIANTS)
def test_every_module_passes_rates_like_increments(name, images):
    """One link from the patch embedding to the head."""
    assert_rates_up_to(build(name), *images)


def test_blocks_and_round_trip(tmp_path, images):
    assert_blocks_and_round_trip(
        lambda: build("gMLP"),
        images,
        {k: [f"blocks.{i}" for i in range(k, 2)] + ["norm", "head"] for k in (0, 1)},
        tmp_path / "net.safetensors",
    )
