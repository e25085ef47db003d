"""Rules for timm's MetaFormer class (Yu et al. 2022, "MetaFormer Baselines for Vision"):
PoolFormer (v1 and v2), ConvFormer and CAFormer.

A MetaFormer block is norm → token mixer → residual, norm → MLP → residual, each branch scaled by
optional constant factors (``Scale``: LayerScale and ResScale, linear). The token mixers:
pooling, avg-pool(x) − x (linear); ConvFormer's separable convolution (1×1 convolution,
StarReLU, depthwise convolution, 1×1 convolution); CAFormer's last two stages' attention on the
flattened tokens, timm's plain ``Attention`` twin (heads of 32 channels, the scores scaled by
head_dim^-1/2). StarReLU (s·ReLU(x)² + b, s and b learned), the head MLP's squared ReLU, and the
norms (``GroupNorm1``: one group, LayerNorm over C, H and W; ``LayerNorm2d`` and the bias-free
variants) become EC modules; every convolution and Linear a weight layer with its MT neuron but
the stem's convolution, which reads the image. Between converted modules the network only sums,
reshapes and scales, so one rate link runs from the stem to the classifier (the head's last
Linear when the head is an MLP). ``blocks=k`` counts every stage's blocks; the converted copy calls
its head as one module (timm runs the head's parts one by one), which can then stay analog whole.
"""

from __future__ import annotations

from timm.models.metaformer import (
    Attention,
    Downsampling,
    MetaFormer,
    MetaFormerBlock,
    MetaFormerStage,
    MlpHead,
    Pooling,
    Scale,
    SepConv,
    SquaredReLU,
    StarReLU,
    Stem,
)
from torch import Tensor, nn

from ..compensation import ExpectationCompensation
from . import Link, Role, register
from .links import link_all, whole_network
from .timm_twins import ExplicitAttention


class CalledHeadMetaFormer(MetaFormer):
    """timm ``MetaFormer`` that calls its head, an ``nn.Sequential`` of pool, norm, flatten,
    dropout and classifier, as one module: what timm's ``forward_head`` computes part by part."""

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head[:-1](x) if pre_logits else self.head(x)


def called_head(model: MetaFormer) -> CalledHeadMetaFormer:
    """The model itself, its class made :class:`CalledHeadMetaFormer` (no new parameters: the keys
    stay the ANN's)."""
    model.__class__ = CalledHeadMetaFormer
    return model


def _model_links(network: nn.Module) -> list[Link]:
    """The one link of the whole network, up to the classifier: ``head.fc``, or its last Linear
    ``head.fc.fc2`` when the head is an MLP (CAFormer's, ConvFormer's), whose own Linear before it
    reads and emits rates like any other."""
    head = network.head
    if isinstance(head, ExpectationCompensation) or not isinstance(head.fc, MlpHead):
        return whole_network(network)
    return link_all(network, "head.fc.fc2")


register(Attention, Role.CONTAINER, twin=ExplicitAttention)
register(MetaFormer, Role.INPUT, twin=called_head)
register(CalledHeadMetaFormer, Role.INPUT, links=_model_links)  # the stem's convolution reads the image
for cls in (Downsampling, MetaFormerBlock, MetaFormerStage, MlpHead, Pooling, SepConv, Stem):
    register(cls, Role.CONTAINER)
register(Scale, Role.PASSTHROUGH)  # a constant factor per channel
for cls in (StarReLU, SquaredReLU):
    register(cls, Role.NONLINEAR)
