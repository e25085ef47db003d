"""Rules for the timm CNN parts of hybrid Vision Transformers: the CNN stems that ``HybridEmbed``
runs before the patch projection (ResNet-V2 with weight-standardized convolutions and GroupNorm,
ResNet-D through ``features_only``, the convolutional stem of ``vit_base_mci``).

The hybrid embedding reads the image: its first convolution sees it at every step (direct coding,
as the plain patch embedding's projection does) and every later convolution gets an MT neuron,
like any weight layer. Norm-and-activation layers, max pools and avg-max pools become EC modules;
BatchNorm in evaluation and average pools are affine and stay; residual sums, downsampling
branches and feature selection are linear, so the blocks and networks are containers, and every
converted module of the stem passes rates (:mod:`transpike.rules.links`).
"""

from __future__ import annotations

import torch
from timm.layers import (
    AdaptiveAvgMaxPool2d,
    AvgPool2dSame,
    BatchNormAct2d,
    ClassifierHead,
    Conv2dSame,
    ConvNormAct,
    HybridEmbed,
    SelectAdaptivePool2d,
    StdConv2d,
    StdConv2dSame,
)
from timm.layers.adaptive_avgmax_pool import (
    AdaptiveCatAvgMaxPool2d,
    FastAdaptiveAvgMaxPool,
    FastAdaptiveAvgPool,
    FastAdaptiveCatAvgMaxPool,
    FastAdaptiveMaxPool,
)
from timm.models import resnet, resnetv2
from timm.models._features import FeatureListNet
from timm.models.vision_transformer_hybrid import ConvStem
from timm.models.vitamin import MbConvStages
from torch import nn

from ..synapses import SpikingLayer
from . import Link, Role, register
from .links import link_all


def plain_convolution(conv: StdConv2d | StdConv2dSame) -> nn.Conv2d:
    """The plain convolution a weight-standardized one computes (Qiao et al. 2019: each output
    channel's weights minus their mean, over the square root of their variance plus ε), with the
    same padding: fixed, or computed from the input's size (TensorFlow's "SAME")."""
    weight = conv.weight.detach()
    mean = weight.mean(dim=(1, 2, 3), keepdim=True)
    variance = weight.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    dynamic = getattr(conv, "same_pad", False)
    plain = (Conv2dSame if dynamic else nn.Conv2d)(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        0 if dynamic else conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        plain.weight.copy_((weight - mean) / torch.sqrt(variance + conv.eps))
        if conv.bias is not None:
            plain.bias.copy_(conv.bias)
    return plain


def embed_output(embed: nn.Module) -> str | None:
    """The path of the weight layer inside a patch embedding whose output the ViT's residual
    stream starts from: the patch projection, or, where that is an Identity, ViTamin's last
    convolution (its MBConv stages end in a LayerNorm and a strided convolution); None when the
    stem's own last convolution is the projection (``proj=False``, ``vit_base_mci``)."""
    if isinstance(getattr(embed, "proj", None), SpikingLayer):
        return "proj"
    backbone = getattr(embed, "backbone", None)
    if isinstance(backbone, MbConvStages) and isinstance(backbone.pool.proj, SpikingLayer):
        return "backbone.pool.proj"
    return None


def _embed_links(embed: HybridEmbed) -> list[Link]:
    """Inside the stem every converted module passes rates (:func:`~transpike.rules.links.link_all`),
    up to the layer whose output starts the ViT's residual stream (:func:`embed_output`), which
    hands the stream its own; none when there is no such layer."""
    output = embed_output(embed)
    return link_all(embed, output) if output is not None else []


register(HybridEmbed, Role.INPUT, links=_embed_links)
for cls in (StdConv2d, StdConv2dSame):
    register(cls, Role.WEIGHT, channel_dims=(-3,), plain=plain_convolution)
register(Conv2dSame, Role.WEIGHT, channel_dims=(-3,))  # pads for TensorFlow's "SAME" in forward
for cls in (
    resnetv2.ResNetV2,
    resnetv2.ResNetStage,
    resnetv2.Bottleneck,
    resnetv2.PreActBottleneck,
    resnetv2.PreActBasic,
    resnetv2.DownsampleConv,
    resnetv2.DownsampleAvg,
    resnet.Bottleneck,
    resnet.BasicBlock,
    FeatureListNet,
    ConvStem,
    ConvNormAct,
    ClassifierHead,
    SelectAdaptivePool2d,
):
    register(cls, Role.CONTAINER)
# GroupNormAct and MaxPool2dSame are subclasses of registered nonlinear types already
# the "Fast" pools are what a channels-last head (Swin's) uses
for cls in (
    BatchNormAct2d,
    AdaptiveAvgMaxPool2d,
    AdaptiveCatAvgMaxPool2d,
    FastAdaptiveMaxPool,
    FastAdaptiveAvgMaxPool,
    FastAdaptiveCatAvgMaxPool,
):
    register(cls, Role.NONLINEAR)
for cls in (AvgPool2dSame, FastAdaptiveAvgPool):
    register(cls, Role.PASSTHROUGH)
