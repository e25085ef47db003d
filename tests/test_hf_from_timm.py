"""Hugging Face transformers' classifiers of architectures timm also builds, whose twins come from
timm's rules: MobileViT (v1 and v2), SwiftFormer, PoolFormer (with or without LayerScale), FocalNet
(pre-norm; post-norm with LayerScale, the LayerNorm in the modulation, the normalized modulator and
convolutional embeddings) and Hiera (mask-unit and global attention, q and the residual pooled
where a stage begins, or a stage widened without pooling): the logits form and the twins against
transformers, conversion, the one rate link, ``blocks=k`` and save/load from the model spec.

transformers draws their weights with std 0.02, under which the signal of a random network vanishes
within a few layers: each is redrawn (:func:`conftest.redrawn`)."""

from typing import NamedTuple

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_logits_form_matches,
    assert_rates_up_to,
    random_images,
    redrawn,
)
from transformers import (
    FocalNetConfig,
    FocalNetForImageClassification,
    HieraConfig,
    HieraForImageClassification,
    MobileViTConfig,
    MobileViTForImageClassification,
    MobileViTV2Config,
    MobileViTV2ForImageClassification,
    PoolFormerConfig,
    PoolFormerForImageClassification,
    PretrainedConfig,
    SwiftFormerConfig,
    SwiftFormerForImageClassification,
)

from transpike.models import create_model, model_spec
from transpike.rules.hf_focalnet import ExplicitHFFocalModulation
from transpike.rules.hf_hiera import ExplicitHFHieraLayer
from transpike.rules.hf_mobilevit import ExplicitMobileViTAttention
from transpike.rules.hf_swiftformer import ExplicitHFAdditiveAttention
from transpike.rules.timm_mobilevit import ExplicitLinearSelfAttention


class Case(NamedTuple):
    cls: type
    config: PretrainedConfig
    #: the twin and how many the prepared model holds
    twin: type | None
    twins: int
    #: products of two spiking operands
    products: int
    #: the weight layer that reads the image
    direct: str
    size: int = 32
    outputs: tuple[str, ...] = ("classifier",)


HIERA = dict(
    image_size=[32, 32],
    embed_dim=8,
    depths=[1, 2, 1],
    num_heads=[1, 2, 2],
    masked_unit_size=[4, 4],
    masked_unit_attention=[True, True, False],
    num_labels=5,
)


def hiera(query_pools: int) -> Case:
    """A small Hiera that pools q where each of the ``query_pools`` stages after the first begins."""
    config = HieraConfig(**HIERA, num_query_pool=query_pools)
    return Case(
        HieraForImageClassification,
        config,
        ExplicitHFHieraLayer,
        4,
        8,
        "hiera.embeddings.patch_embeddings.projection",
    )


MODELS = {
    # 64 px (maps of 32 to 2); v1: three layers of 2, 4 and 3 transformer layers, Q·Kᵀ and attn·V in
    # each; v2: one in each, the context and the gating
    "mobilevit": Case(
        MobileViTForImageClassification,
        MobileViTConfig(
            image_size=64,
            hidden_sizes=[16, 24, 32],
            neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
            num_attention_heads=2,
            num_labels=5,
        ),
        ExplicitMobileViTAttention,
        9,
        18,
        "mobilevit.conv_stem.convolution",
        size=64,
    ),
    "mobilevitv2": Case(
        MobileViTV2ForImageClassification,
        MobileViTV2Config(image_size=64, width_multiplier=0.25, n_attn_blocks=[1, 1, 1], num_labels=5),
        ExplicitLinearSelfAttention,
        3,
        6,
        "mobilevitv2.conv_stem.convolution",
        size=64,
    ),
    # 64 px: a convolution encoder or none, then the attention block (the global query and the
    # gating), in each of four stages of widths 8 to 32 (maps of 16 to 2); two heads
    "swiftformer": Case(
        SwiftFormerForImageClassification,
        SwiftFormerConfig(depths=[1, 1, 2, 1], embed_dims=[8, 16, 24, 32], num_labels=5),
        ExplicitHFAdditiveAttention,
        4,
        8,
        "swiftformer.patch_embed.patch_embedding.0",
        size=64,
        outputs=("head", "dist_head"),
    ),
    # two stages of widths 8 and 16 (maps of 8 and 4)
    "poolformer": Case(
        PoolFormerForImageClassification,
        PoolFormerConfig(hidden_sizes=[8, 16], depths=[1, 2], num_encoder_blocks=2, num_labels=5),
        None,
        0,
        0,
        "poolformer.encoder.patch_embeddings.0.projection",
    ),
    "poolformer-plain": Case(
        PoolFormerForImageClassification,
        PoolFormerConfig(
            hidden_sizes=[8, 16], depths=[1, 2], num_encoder_blocks=2, use_layer_scale=False, num_labels=5
        ),
        None,
        0,
        0,
        "poolformer.encoder.patch_embeddings.0.projection",
    ),
    # two stages of one layer each, widths 16 and 32 (maps of 8 and 4), two focal levels: three
    # gated contexts and q × modulator per layer
    "focalnet": Case(
        FocalNetForImageClassification,
        FocalNetConfig(image_size=32, embed_dim=16, depths=[1, 1], focal_levels=[2, 2], num_labels=5),
        ExplicitHFFocalModulation,
        2,
        8,
        "focalnet.embeddings.patch_embeddings.projection",
    ),
    "focalnet-post": Case(
        FocalNetForImageClassification,
        FocalNetConfig(
            image_size=32,
            embed_dim=16,
            depths=[1, 1],
            focal_levels=[2, 2],
            use_post_layernorm=True,
            use_layerscale=True,
            layerscale_value=0.5,
            use_post_layernorm_in_modulation=True,
            normalize_modulator=True,
            use_conv_embed=True,
            num_labels=5,
        ),
        ExplicitHFFocalModulation,
        2,
        8,
        "focalnet.embeddings.patch_embeddings.projection",
    ),
    # tokens of 4 px (an 8×8 grid), three stages of widths 8 to 32 (grids of 8 to 2), mask units of
    # 4×4 tokens in the first two, global attention in the last; Q·Kᵀ and attn·V in every layer
    "hiera": hiera(query_pools=2),
    # q pooled only where the second stage begins: the third widens without pooling
    "hiera-widening": hiera(query_pools=1),
}


def build(kind: str, logits: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    return redrawn(MODELS[kind].cls(MODELS[kind].config), logits)


def inputs(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(MODELS[kind].size, (16, 4))


@pytest.mark.parametrize("kind", MODELS)
def test_the_logits_form_and_twins_compute_what_transformers_does(kind):
    model = build(kind, logits=False).double()
    x = inputs(kind)[1].double()
    with torch.no_grad():
        prepared = assert_logits_form_matches(model, x, model(pixel_values=x).logits)
    twin = MODELS[kind].twin
    assert sum(twin is not None and isinstance(m, twin) for m in prepared.modules()) == MODELS[kind].twins


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_the_classifiers_convert(kind, options):
    """The first weight layer reads the image; the products of two spiking operands are modules."""
    case = MODELS[kind]
    assert_converts(build(kind), *inputs(kind), options, direct=case.direct, products=case.products)


@pytest.mark.parametrize("kind", MODELS)
def test_every_module_passes_rates_like_increments(kind):
    """One link from the first weight layer to the classifiers."""
    assert_rates_up_to(build(kind), *inputs(kind), outputs=MODELS[kind].outputs)


@pytest.mark.parametrize(
    ("kind", "analog"),
    [
        # the last two MobileViT layers and v1's 1×1 expansion after them
        ("mobilevit", ["mobilevit.encoder.layer.3", "mobilevit.encoder.layer.4", "mobilevit.conv_1x1_exp"]),
        ("mobilevitv2", ["mobilevitv2.encoder.layer.3", "mobilevitv2.encoder.layer.4"]),
        # the last stage's attention block (its BatchNorm is affine: no module after it)
        ("swiftformer", ["swiftformer.encoder.network.6.blocks.0"]),
        # the last stage's second layer, then the classifier's norm (PoolFormer's GroupNorm)
        ("poolformer", ["poolformer.encoder.block.1.1", "norm"]),
        # the second stage's layer, then the final LayerNorm
        ("focalnet", ["focalnet.encoder.stages.1.layers.0", "focalnet.layernorm"]),
        # the last stage's layer, then the pooler's LayerNorm
        ("hiera", ["hiera.encoder.stages.2.layers.0", "hiera.pooler"]),
    ],
)
def test_blocks_and_round_trip(kind, analog, tmp_path):
    """blocks=k counts every stage's blocks (MobileViT: its inverted residuals one by one and each
    MobileViT layer as one): with all but the last (MobileViT: the last two) converted, they and
    what follows them stay analog; the network saved and loaded is rebuilt from its model spec."""
    case = MODELS[kind]
    name, kwargs = f"hf:{case.cls.__name__}", case.config.to_diff_dict()
    spec = model_spec(name, kwargs, model=create_model(name, kwargs))
    blocks = len(build(kind).block_paths()) - (2 if kind.startswith("mobilevit") else 1)
    analog = {blocks: [*analog, *case.outputs]}
    path = tmp_path / "net.safetensors"
    assert_blocks_and_round_trip(lambda: build(kind), inputs(kind), analog, path, spec)
