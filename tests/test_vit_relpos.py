"""timm's ViT with relative position biases (``VisionTransformerRelPos``): a bias per block (the
log-coordinate MLP or a table) or one shared by all blocks, with or without a class token,
pre-norm or residual post-norm blocks; the twin, conversion, rate links, ``blocks=k`` and
save/load."""

import pytest
import timm
import torch
from conftest import (
    CONFIGURATIONS,
    TINY,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    assert_twin_matches,
    draw,
    spread,
)
from timm.models.vision_transformer_relpos import RelPosAttention, ResPostRelPosBlock

from transpike.rules.timm_vit_relpos import ExplicitRelPosAttention

VARIANTS = {
    "mlp bias": dict(fc_norm=True),
    "table bias, class token": dict(rel_pos_type="bias", class_token=True, global_pool="token"),
    "shared bias": dict(shared_rel_pos=True, rel_pos_dim=16),
    "post-norm": dict(block_fn=ResPostRelPosBlock),
}


def build(variant: str) -> torch.nn.Module:
    """A small random-init model whose blocks matter: LayerScale 0.5 (timm: 1e-6), the bias
    tables drawn (timm starts them at zero), attention and branches spread."""
    torch.manual_seed(0)
    model = timm.create_model("vit_relpos_small_patch16_224", **TINY, init_values=0.5, **VARIANTS[variant])
    draw(model.eval(), "relative_position_bias_table", 1.0)
    return spread(model, ("attn.proj.weight", "mlp.fc2.weight", "head.weight"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_twin_computes_what_timm_does(variant, images):
    assert_twin_matches(build(variant), images[1], RelPosAttention, ExplicitRelPosAttention, 2)
    assert_prepared_matches_in_float64(build(variant), images[1])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_vit_relpos_converts(variant, options, images):
    """The patch embedding reads the image; two products per block; the position biases are
    constants (the shared one a module of the model's own)."""
    snn = assert_converts(build(variant), *images, options, direct="patch_embed.proj", products=2 * 2)
    constants = {r.path for r in snn.report().by_role("constant")}
    if variant == "shared bias":
        assert constants == {"shared_rel_pos"}
    else:
        assert constants == {f"blocks.{i}.attn.rel_pos" for i in range(2)}


@pytest.mark.parametrize("variant", ["mlp bias", "table bias, class token", "shared bias"])
def test_every_module_passes_rates_like_increments(variant, images):
    """Pre-norm blocks are a ViT's: the stream, the norms and the head's norm pass rates."""
    assert_rates_up_to(build(variant), *images)


def test_blocks_and_round_trip(tmp_path, images):
    after = ["fc_norm", "head"]  # the small model sets fc_norm: norm is an Identity
    kwargs = {**TINY, "init_values": 0.5, **VARIANTS["shared bias"]}
    spec = {"timm": "vit_relpos_small_patch16_224", "kwargs": kwargs}
    assert_blocks_and_round_trip(
        lambda: build("shared bias"),
        images,
        {k: [f"blocks.{i}" for i in range(k, 2)] + after for k in (0, 1)},
        tmp_path / "net.safetensors",
        spec,
    )
