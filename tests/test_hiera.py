"""timm's Hiera: unrolled tokens, attention within mask units or global, q and the residual
max-pooled where a stage begins (with or without the expanding projection), absolute window
position embeddings; the twins, conversion, rate links, ``blocks=k`` and save/load."""

import pytest
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
from timm.models.hiera import Hiera

import transpike
from transpike.rules.timm_hiera import ExplicitHieraBlock, StrideMax

#: at 32 px: 8 × 8 tokens in four mask units of 4 × 4, one block per stage, pooled 2 × 2 where the
#: second and third stages begin (64, 16, 4 and 4 tokens); mask-unit attention in the first two
#: stages, global in the last two
TINY = dict(img_size=32, embed_dim=16, num_heads=1, stages=(1, 1, 1, 1), q_pool=2, mask_unit_size=(4, 4))
TINY.update(num_classes=5)
VARIANTS = {
    "expanding projection": {},
    "max and mean joined": dict(use_expand_proj=False),
    "window position embeddings": dict(abs_win_pos_embed=True, global_pos_size=(4, 4)),
}


def build(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = Hiera(**TINY, **VARIANTS[variant]).eval()
    return spread(model, ("attn.proj.weight", "mlp.fc2.weight", "head.fc.weight"))  # timm: head at zero


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32, (16, 4))


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_twins_compute_what_timm_does(variant, inputs):
    prepared = assert_prepared_matches_in_float64(build(variant), inputs[1])
    assert sum(isinstance(m, ExplicitHieraBlock) for m in prepared.modules()) == 4
    assert sum(isinstance(m, StrideMax) for m in prepared.modules()) == 4  # q and residual, twice


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_hiera_converts(variant, options, inputs):
    """The patch embedding reads the image; two products per block; each pooling is an EC
    module."""
    snn = assert_converts(build(variant), *inputs, options, direct="patch_embed.proj", products=4 * 2)
    ec = {r.path for r in snn.report().by_role("ec")}
    assert {"blocks.1.pool", "blocks.1.attn.q_pool", "blocks.2.pool", "blocks.2.attn.q_pool"} <= ec


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_module_passes_rates_like_increments(variant, inputs):
    assert_rates_up_to(build(variant), *inputs, outputs=("head.fc",))


def test_blocks_and_round_trip(tmp_path, inputs):
    assert_blocks_and_round_trip(
        lambda: build("expanding projection"),
        inputs,
        {k: [f"blocks.{i}" for i in range(k, 4)] + ["head"] for k in (1, 2)},
        tmp_path / "net.safetensors",
    )


def test_a_max_pooled_head_is_refused_by_name():
    torch.manual_seed(0)
    model = Hiera(**TINY, global_pool="max").eval()
    with pytest.raises(transpike.ConversionError, match=r"head .*'max' pool is computed in forward"):
        transpike.prepare(model, transpike.ConversionOptions())
