"""timm's MViTv2: pooling attention (q, k, v pooled on the token map by strided depthwise
convolutions and layer-normed), the decomposed relative position term, residual pooling, pooled
and projected shortcuts, with or without a class token; the twin, the size-free blocks and stages,
conversion, rate links, ``blocks=k`` and save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks,
    assert_converts,
    assert_links_keep_outputs,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    assert_round_trip,
    draw,
    random_images,
    spread,
)
from timm.models.mvitv2 import MultiScaleVit, MultiScaleVitCfg

import transpike
from transpike.rules.timm_mvitv2 import ExplicitPoolingAttention

#: MViTv2-T's layout at 64 px (maps of 16×16 to 2×2), 1, 2, 1 and 1 blocks, widths 8 to 64 with
#: 1 to 8 heads; q pooled where a stage opens, k and v always (strides 4, 2, 1, 1)
DEPTHS = (1, 2, 1, 1)
TOKENS = {"no class token": False, "class token": True}


def build(tokens: str = "no class token") -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = MultiScaleVitCfg(depths=DEPTHS, embed_dim=8, num_heads=1, use_cls_token=TOKENS[tokens])
    model = draw(MultiScaleVit(cfg, img_size=64, num_classes=5).eval(), ("rel_pos_h", "rel_pos_w"), 0.1)
    return spread(model, ("attn.proj.weight", "mlp.fc2.weight", "head.fc.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


@pytest.mark.parametrize("tokens", TOKENS)
def test_the_twin_computes_what_timm_does(tokens, inputs):
    prepared = assert_prepared_matches_in_float64(build(tokens), inputs[1])
    assert sum(isinstance(m, ExplicitPoolingAttention) for m in prepared.modules()) == 5


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_mvitv2_converts(tokens, options, inputs):
    """The patch embedding reads the image; two products per block; the poolings' convolutions
    get MT neurons, their norms and the shortcuts' max pools are EC modules."""
    snn = assert_converts(build(tokens), *inputs, options, direct="patch_embed.proj", products=5 * 2)
    report = snn.report()
    assert {"stages.1.blocks.0.attn.pool_q", "stages.0.blocks.0.attn.pool_k"} <= {
        r.path for r in report.by_role("mt+weight")
    }
    assert {"stages.1.blocks.0.attn.norm_q", "stages.1.blocks.0.shortcut_pool_attn"} <= {
        r.path for r in report.by_role("ec")
    }


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build("class token"), *inputs, outputs=("head.fc",))


def test_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts the blocks stage by stage; a block or a stage left analog takes the map's
    size as a constant; saved and loaded (the ANN rebuilt by ``build``), the network keeps timm's
    keys."""
    calibration, x = inputs
    tail = ["stages.2", "stages.3", "norm", "head"]
    expected = {0: ["stages.0.blocks.0", "stages.1", *tail], 2: ["stages.1.blocks.1", *tail], 5: []}
    assert_blocks(build(), calibration, x, expected)
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=2), x.double())
    snn = transpike.convert(build("class token"), calibration, method="sit")
    assert_round_trip(snn, lambda: build("class token"), x, tmp_path / "mvitv2.safetensors")
