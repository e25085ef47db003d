"""timm's attention ResNets (``byoanet``): BoTNet's attention over the map, HaloNet's over blocks
with a halo, lambda layers (a convolutional or a relative position lambda), ECA gates, BAT's
bilinear attention; the twins, conversion, the one rate link, ``blocks=k`` and save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    random_images,
)
from timm.layers.non_local_attn import BilinearAttnTransform
from timm.models.byobnet import ByoBlockCfg, ByobNet, ByoModelCfg

from transpike.rules.timm_byoanet import (
    ExplicitBilinearAttnTransform,
    ExplicitBottleneckAttn,
    ExplicitHaloAttn,
    ExplicitLambdaLayer,
    spread,
)

#: the self-attention layer, its arguments and the model's beyond them; the twin it becomes
VARIANTS = {
    "BoTNet": ("bottleneck", {}, {}, ExplicitBottleneckAttn),
    "BoTNet, scaled position logits": ("bottleneck", dict(scale_pos_embed=True), {}, ExplicitBottleneckAttn),
    "HaloNet": ("halo", dict(block_size=4, halo_size=1), {}, ExplicitHaloAttn),
    "HaloNet, ECA, SiLU": (
        "halo",
        dict(block_size=4, halo_size=1, dim_head=8),
        dict(attn_layer="eca", act_layer="silu"),
        ExplicitHaloAttn,
    ),
    "LambdaNet": ("lambda", dict(r=3), {}, ExplicitLambdaLayer),
    "LambdaNet, relative positions": ("lambda", dict(r=None), {}, ExplicitLambdaLayer),
}
#: products of two spiking operands per attention layer
PRODUCTS = {"bottleneck": 2, "halo": 2, "lambda": 3}


def build(variant: str) -> torch.nn.Module:
    """A small random-init attention ResNet for 64 px images: a tiered stem and max pool to 16 px,
    a bottleneck block, then two self-attention blocks (the first strided: 8 px); the position
    embeddings drawn large enough to matter, the residual branches' last BatchNorms at weight 1."""
    layer, kwargs, extra, _ = VARIANTS[variant]
    blocks = (
        ByoBlockCfg(type="bottle", d=1, c=32, s=1, gs=0, br=0.25),
        ByoBlockCfg(type="self_attn", d=2, c=64, s=2, gs=0, br=0.25),
    )
    stem = dict(stem_chs=16, stem_type="tiered", stem_pool="maxpool")
    cfg = ByoModelCfg(blocks=blocks, self_attn_layer=layer, self_attn_kwargs=kwargs, **stem, **extra)
    torch.manual_seed(0)
    # timm zeroes each residual branch's last BatchNorm, which would hide the attention
    model = ByobNet(cfg, img_size=64, num_classes=5, zero_init_last=False).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("height_rel", "width_rel", "pos_emb")):
                parameter.normal_(0, 0.5)
    return model


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64)


@pytest.mark.parametrize("variant", VARIANTS)
def test_prepared_computes_what_timm_does(variant, inputs):
    prepared = assert_prepared_matches_in_float64(build(variant), inputs[1])
    assert sum(isinstance(m, VARIANTS[variant][3]) for m in prepared.modules()) == 2


@pytest.mark.parametrize("variant", ["BoTNet", "HaloNet, ECA, SiLU", "LambdaNet"])
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_attention_resnets_convert(variant, options, inputs):
    """The stem's first convolution reads the image; each attention layer's products (and the
    bottleneck block's ECA gate's product with its map: the attention blocks have no gate)."""
    layer, _, extra, _ = VARIANTS[variant]
    products = 2 * PRODUCTS[layer] + (1 if extra.get("attn_layer") == "eca" else 0)
    model = build(variant)
    assert_converts(model, *inputs, options, direct="stem.conv1.conv", products=products, tolerance=0.2)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_module_passes_rates_like_increments(variant, inputs):
    """One link from the stem to the head's classifier."""
    assert_rates_up_to(build(variant), *inputs, outputs=("head.fc",))


@pytest.mark.parametrize("variant", ["BoTNet", "LambdaNet"])
def test_blocks_and_round_trip(variant, tmp_path, inputs):
    analog = {1: ["stages.1.0", "stages.1.1", "head"], 2: ["stages.1.1", "head"]}
    assert_blocks_and_round_trip(lambda: build(variant), inputs, analog, tmp_path / "net.safetensors")


def build_bat() -> torch.nn.Module:
    """A small random-init BAT ResNet for 64 px images: the stem to 16 px, then two bottleneck
    blocks with BAT's bilinear attention in blocks of 4 px (spread over the 16 px and 8 px maps)."""
    blocks = (
        ByoBlockCfg(type="bottle", d=1, c=32, s=1, gs=0, br=0.25),
        ByoBlockCfg(type="bottle", d=1, c=64, s=2, gs=0, br=0.25),
    )
    stem = dict(stem_chs=16, stem_type="tiered", stem_pool="maxpool")
    cfg = ByoModelCfg(blocks=blocks, attn_layer="bat", attn_kwargs=dict(block_size=4), **stem)
    torch.manual_seed(0)
    return ByobNet(cfg, img_size=64, num_classes=5, zero_init_last=False).eval()


def test_bat_twin_computes_what_timm_does(inputs):
    weights = torch.randn(2, 3, 4, 4)
    assert torch.equal(spread(weights, 3), BilinearAttnTransform.resize_mat(None, weights, 3))
    prepared = assert_prepared_matches_in_float64(build_bat(), inputs[1])
    assert sum(isinstance(m, ExplicitBilinearAttnTransform) for m in prepared.modules()) == 2
    with pytest.raises(ValueError, match="block size 4 divides, got 6×8"):
        prepared.stages[0][0].attn.ba(torch.zeros(1, 32, 6, 8, dtype=torch.float64))


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_bat_converts(options, inputs):
    """The stem's first convolution reads the image; P·X and (P·X)·Q in each of two transforms."""
    assert_converts(build_bat(), *inputs, options, direct="stem.conv1.conv", products=2 * 2, tolerance=0.2)


def test_bat_passes_rates_like_increments(tmp_path, inputs):
    """One link from the stem to the head's classifier; saved and loaded, the same outputs."""
    assert_rates_up_to(build_bat(), *inputs, outputs=("head.fc",))
    analog = {1: ["stages.1.0", "head"]}
    assert_blocks_and_round_trip(build_bat, inputs, analog, tmp_path / "net.safetensors")
