"""timm's CaiT: talking-heads self-attention (Linears across the heads before and after the
softmax), class attention, LayerScale; the twins, conversion, rate links, ``blocks=k`` over both
kinds of block, and save/load."""

import pytest
import timm
import torch
from conftest import (
    CONFIGURATIONS,
    ann_output,
    assert_converts,
    assert_links_keep_outputs,
    emitters,
    relative_error,
    spread,
)
from timm.models.cait import ClassAttn

import transpike
from transpike import ConversionOptions, prepare
from transpike.io import rebuild_ann
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
    model = build(global_pool="avg")
    prepared = prepare(model, ConversionOptions())
    twins = (ExplicitTalkingHeadAttn, ExplicitClassAttn)
    kinds = [type(m) for m in prepared.modules() if isinstance(m, twins)]
    assert kinds == [ExplicitTalkingHeadAttn] * 2 + [ExplicitClassAttn]
    with torch.no_grad():
        for fused in (True, False):
            for module in model.modules():
                if isinstance(module, ClassAttn):
                    module.fused_attn = fused
            assert relative_error(prepared(images[1]), model(images[1])) < 1e-6


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_cait_converts_with_the_heads_mixing_behind_mt_neurons(options, images):
    """Two products per block; qkv, proj_l, proj_w and proj in a self-attention block, q, k, v and
    proj in a class-attention block, the MLPs and the head are weight layers with MT neurons."""
    snn = assert_converts(build(), *images, options, direct="patch_embed.proj", products=3 * 2)
    weights = [r.path for r in snn.report().by_role("mt+weight")]
    assert {"blocks.0.attn.proj_l", "blocks.0.attn.proj_w", "blocks_token_only.0.attn.q"} <= set(weights)
    assert len(weights) == 2 * 6 + 6 + 1


def test_every_module_passes_rates_like_increments(images):
    calibration, x = images
    linked = transpike.convert(build().double(), calibration.double())
    head = linked.network.head
    assert all(m.emits_rate for m in emitters(linked.network) if m is not head) and not head.emits_rate
    assert_links_keep_outputs(linked, x.double())
    headless = transpike.convert(build(num_classes=0).double(), calibration.double())
    assert not headless.network.norm.emits_rate  # the output: increments
    assert_links_keep_outputs(headless, x.double())


def test_blocks_count_self_then_class_attention_blocks(images):
    """blocks=k: the self-attention blocks, then the class-attention block, which (left analog) reads
    [class token; patches] as one tensor; linked = unlinked."""
    calibration, x = images
    model = build()
    ref = ann_output(model, x)
    tail = ["norm", "head_drop", "head"]
    expected = {0: ["blocks.0", "blocks.1", "blocks_token_only.0", *tail], 2: ["blocks_token_only.0", *tail]}
    expected[3] = []
    for k, analog in expected.items():
        snn = transpike.convert(model, calibration, blocks=k, neuron="burst", threshold="mse")
        assert [row.path for row in snn.report().analog] == analog
        assert relative_error(snn.simulate(x, 16)[-1], ref) < (1e-5 if k == 0 else 0.01)
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=2), x.double())


def test_round_trip_keeps_timms_keys(tmp_path, images):
    calibration, x = images
    model = build()
    spec = {"timm": "cait_xxs24_224", "kwargs": TINY}
    snn = transpike.convert(model, calibration, method="sit", model_spec=spec)
    assert set(snn.ann_state_dict()) == set(model.state_dict())
    loaded = transpike.load(transpike.save(snn, tmp_path / "cait.safetensors"))
    assert torch.equal(loaded.simulate(x, 4), snn.simulate(x, 4))
    with torch.no_grad():
        assert torch.equal(rebuild_ann(loaded, build())(x), model(x))
