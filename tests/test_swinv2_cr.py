"""timm's Swin V2 Cr (``SwinTransformerV2Cr``): cosine window attention with the meta MLP's
position bias, shifted windows with their mask, residual post-norm and the extra norms of the
``_ns`` models; the twin, conversion, rate links, ``blocks=k`` and save/load."""

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
from timm.models.swin_transformer_v2_cr import WindowMultiHeadAttention

import transpike
from transpike.rules.timm_swinv2_cr import ExplicitMetaWindowAttention

#: at 64 px: 16×16 tokens in windows of 4 (shifted every other block), then 8×8; the ``_ns``
#: model with an extra norm after every block
TINY = dict(img_size=64, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4, num_classes=5)
MODELS = {
    "plain": ("swinv2_cr_tiny_224", {}),
    "extra norms": ("swinv2_cr_tiny_ns_224", dict(extra_norm_period=1)),
}


def build(kind: str = "plain") -> torch.nn.Module:
    """A small random-init model whose blocks matter: the post-norms at weight 1 (timm starts them
    at 0), q and k scaled up, the head drawn large."""
    name, extra = MODELS[kind]
    torch.manual_seed(0)
    model = timm.create_model(name, **TINY, **extra).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm) and not module.weight.any():
                module.weight.fill_(1.0)
    return spread(model, ("head.fc.weight",))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


@pytest.mark.parametrize("kind", MODELS)
def test_the_twin_computes_what_timm_does(kind, inputs):
    assert_twin_matches(build(kind), inputs[1], WindowMultiHeadAttention, ExplicitMetaWindowAttention, 4)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_swinv2_cr_converts(kind, options, inputs):
    """4 blocks × 2 products; the normalizations of q and k are EC modules, each meta MLP a
    constant."""
    snn = assert_converts(build(kind), *inputs, options, direct="patch_embed.proj", products=4 * 2)
    report = snn.report()
    assert len([r for r in report.by_role("ec") if r.path.endswith(("q_norm", "k_norm"))]) == 8
    assert len(report.by_role("constant")) == 4


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build("extra norms"), *inputs, outputs=("head.fc",))


def test_blocks_count_every_stages_blocks_and_round_trip(tmp_path, inputs):
    calibration, x = inputs
    expected = {1: ["stages.0.blocks.1", "stages.1", "head"], 3: ["stages.1.blocks.1", "head"], 4: []}
    assert_blocks(build(), calibration, x, expected)
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=1), x.double())
    snn = transpike.convert(build(), calibration, method="sit")
    assert_round_trip(snn, build, x, tmp_path / "swinv2_cr.safetensors")
