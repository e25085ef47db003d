"""timm's CrossViT: two branches embedding the image at two patch sizes (plain or the dagger's
convolutional patch embeddings), ViT blocks on each, and cross-attention from each branch's
class token to the other branch's patches; the twin, conversion, rate links to both heads,
``blocks=k`` and save/load."""

import pytest
import timm
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks,
    assert_converts,
    assert_links_keep_outputs,
    assert_rates_up_to,
    assert_round_trip,
    assert_twin_matches,
    random_images,
    spread,
)
from timm.layers import Attention
from timm.models.crossvit import CrossAttention

import transpike
from transpike.rules.timm_cait import ExplicitClassAttn

#: at 48 px: 6×6 and 3×3 patches (4×4 and 3×3 with the dagger's patches of 12 and 16); two
#: multi-scale blocks of one ViT block per branch and one cross-attention per branch
TINY = dict(img_size=48, img_scale=[1.0, 1.0], embed_dim=[16, 32], num_heads=[2, 2], num_classes=5)
TINY.update(depth=[[1, 1, 0], [1, 1, 0]], mlp_ratio=[2, 2, 1])
KINDS = {"plain": dict(patch_size=[8, 16]), "dagger": dict(patch_size=[12, 16], multi_conv=True)}
DIRECT = {
    "plain": ("patch_embed.0.proj", "patch_embed.1.proj"),
    "dagger": ("patch_embed.0.proj.0", "patch_embed.1.proj.0"),
}


def build(kind: str = "plain") -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("crossvit_tiny_240", **TINY, **KINDS[kind]).eval()
    return spread(
        model,
        ("attn.proj.weight", "fc2.weight", "head.0.weight", "head.1.weight"),
        ("qkv.weight", "wq.weight", "wk.weight"),
    )


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(48)


def test_the_twin_computes_what_timm_does(inputs):
    """Two cross-attentions in each of two multi-scale blocks."""
    assert_twin_matches(build(), inputs[1], (CrossAttention, Attention), ExplicitClassAttn, 4)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_crossvit_converts(kind, options, inputs):
    """Each branch's first convolution reads the image; 2 blocks × (2 ViT blocks + 2
    cross-attentions) × 2 products."""
    assert_converts(build(kind), *inputs, options, direct=DIRECT[kind], products=2 * 4 * 2)


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build(), *inputs, outputs=("head.0", "head.1"))


def test_blocks_count_multiscale_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts the multi-scale blocks (an analog one reads both branches packed into one
    tensor); after them the norms and heads stay analog, each on its own (they live in lists);
    linked = unlinked. Saved and loaded by the model's spec, the network keeps timm's keys."""
    calibration, x = inputs
    tail = ["norm.0", "norm.1", "head.0", "head.1"]
    assert_blocks(build(), calibration, x, {1: ["blocks.1", *tail], 2: []})
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=1), x.double())
    spec = {"timm": "crossvit_tiny_240", "kwargs": {**TINY, **KINDS["plain"]}}
    snn = transpike.convert(build(), calibration, method="sit", model_spec=spec)
    assert_round_trip(snn, build, x, tmp_path / "crossvit.safetensors", by_spec=True)
