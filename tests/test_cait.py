"""timm's CaiT: talking-heads self-attention (Linears across the heads before and after the
softmax), class attention, LayerScale; the twins, conversion, rate links, ``blocks=k`` over both
kinds of block, and save/load."""

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
    spread,
)
from timm.models.cait import ClassAttn

import transpike
from transpike.rules.timm_cait import ExplicitClassAttn, ExplicitTalkingHeadAttn

TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, depth_token_only=1, num_heads=4, num_classes=5)
TINY["init_values"] = 1.0


def build(**kwargs) -> torch.nn.Module:
    """A small random-init CaiT whose blocks matter: LayerScale at 1 (timm starts it at 1e-5), q, k
    and the heads' mixing spread, the branches' outputs as large as the patch embedding."""
    torch.manual_seed(0)
    model = timm.create_model("cait_xxs24_224", **{**TINY, **kwargs}).eval()
    with torch.no_grad():
        model.cls_token.normal_(0, 0.5)
    return spread(model, ("proj_l.weight", "proj_w.weight", "proj.weight", "fc2.weight", "head.weight"))


def test_the_twins_compute_what_timm_does(images):
    twins = (ExplicitTalkingHeadAttn, ExplicitClassAttn)
    assert_twin_matches(build(global_pool="avg"), images[1], ClassAttn, twins, 2 + 1)


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_cait_converts_with_the_heads_mixing_behind_mt_neurons(options, images):
    """Two products per block; qkv, proj_l, proj_w and proj in a self-attention block, q, k, v and
    proj in a class-attention block, the MLPs and the head are weight layers with MT neurons."""
    snn = assert_converts(build(), *images, options, direct="patch_embed.proj", products=3 * 2)
    weights = [r.path for r in snn.report().by_role("mt+weight")]
    assert {"blocks.0.attn.proj_l", "blocks.0.attn.proj_w", "blocks_token_only.0.attn.q"} <= set(weights)
    assert len(weights) == 2 * 6 + 6 + 1


def test_every_module_passes_rates_like_increments(images):
    assert_rates_up_to(build(), *images)
    calibration, x = images
    headless = transpike.convert(build(num_classes=0).double(), calibration.double())
    assert not headless.network.norm.emits_rate  # the output: increments
    assert_links_keep_outputs(headless, x.double())


def test_blocks_count_self_then_class_attention_blocks(images):
    """blocks=k: the self-attention blocks, then the class-attention block, which (left analog) reads
    [class token; patches] as one tensor; linked = unlinked."""
    calibration, x = images
    tail = ["norm", "head"]
    assert_blocks(build(), calibration, x, {0: ["blocks.0", "blocks.1", "blocks_token_only.0", *tail]}, 1e-5)
    assert_blocks(build(), calibration, x, {2: ["blocks_token_only.0", *tail], 3: []})
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=2), x.double())


def test_round_trip_keeps_timms_keys(tmp_path, images):
    calibration, x = images
    spec = {"timm": "cait_xxs24_224", "kwargs": TINY}
    snn = transpike.convert(build(), calibration, method="sit", model_spec=spec)
    assert_round_trip(snn, build, x, tmp_path / "cait.safetensors", by_spec=True)
