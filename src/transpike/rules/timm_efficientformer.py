"""Rules for timm's EfficientFormer (``EfficientFormer``: L1, L3, L7; Li et al. 2022,
"EfficientFormer: Vision Transformers at MobileNet Speed").

EfficientFormer stacks 4-D MetaBlocks (a pooling token mixer, pool(x) - x, and a 1×1-convolution
MLP with BatchNorm and GELU) and, in its last stage, 3-D MetaBlocks (a pre-norm attention block on
the flattened tokens). Pooling and the subtraction are linear, BatchNorm in evaluation is affine,
LayerScale a constant factor; GELU, ReLU and LayerNorm become EC modules and every convolution
and Linear a weight layer with its MT neuron, but the stem's first convolution, which reads the
image. The attention is TinyViT's without its LayerNorm (v wider than q and k, learned biases per
relative offset, a constant on the scores): the same twin. Both classifier heads, averaged (the
distillation head), read one rate link that runs from the stem. ``blocks=k`` counts every stage's
blocks; the flattening before the 3-D blocks is one of them in timm's layout.
"""

from __future__ import annotations

from timm.layers import LayerScale2d
from timm.models.efficientformer import (
    Attention,
    ConvMlpWithNorm,
    Downsample,
    EfficientFormer,
    EfficientFormerStage,
    Flat,
    MetaBlock1d,
    MetaBlock2d,
    Pooling,
    Stem4,
)
from torch import nn

from . import Link, Role, register
from .links import link_all
from .timm_tinyvit import ExplicitBiasedAttention


def _model_links(model: EfficientFormer) -> list[Link]:
    """One link from the stem to the two heads; none for a headless model."""
    return [] if isinstance(model.head, nn.Identity) else link_all(model, "head", "head_dist")


register(Attention, Role.CONTAINER, twin=ExplicitBiasedAttention)
register(EfficientFormer, Role.INPUT, links=_model_links)  # the stem's first convolution reads the image
for cls in (
    ConvMlpWithNorm,
    Downsample,
    EfficientFormerStage,
    Flat,
    MetaBlock1d,
    MetaBlock2d,
    Pooling,
    Stem4,
):
    register(cls, Role.CONTAINER)
register(LayerScale2d, Role.PASSTHROUGH)  # γ per channel: linear
