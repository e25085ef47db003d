"""Rules for timm's EfficientViT from Microsoft Research (Liu et al. 2023, "EfficientViT: Memory
Efficient Vision Transformer with Cascaded Group Attention"; ``EfficientVitMsra``, M0 to M5).

Its attention is cascaded group attention within windows of the map: the input's channels are
split among the heads, and each head reads its own split plus the previous head's output (a sum),
projects it to q, k and v (a 1×1 convolution with BatchNorm), convolves q depthwise, and attends
with a bias per offset between pixels (a constant, LeViT's). The twin keeps timm's cascade, one
head after the other, with each head's Q·Kᵀ, softmax and attn·V as modules; the output projection
starts with a ReLU (an EC module). Window partition and padding are linear. The patch merging
applies one ReLU twice, so its twin gives the second call its own copy. The residual branches are
sums; the stem's first convolution reads the image; one rate link runs from it to the head's
Linear, behind a BatchNorm.
"""

from __future__ import annotations

import copy
from functools import partial

import torch
from timm.models import efficientvit_msra as msra
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import whole_network


class ExplicitCascadedGroupAttention(nn.Module):
    """timm's ``CascadedGroupAttention`` with each head's Q·Kᵀ (scaled), softmax and attn·V as
    modules and the bias per pixel offset as a constant. Shares the original's submodules and
    parameters under their names."""

    def __init__(self, attn: msra.CascadedGroupAttention) -> None:
        super().__init__()
        # the window's side, which LocalWindowAttention reads to cut the map
        self.key_dim, self.val_dim, self.resolution = attn.key_dim, attn.val_dim, attn.resolution
        self.qkvs, self.dws, self.proj = attn.qkvs, attn.dws, attn.proj
        self.attention_biases = attn.attention_biases
        self.register_buffer("attention_bias_idxs", attn.attention_bias_idxs, persistent=False)
        heads = range(len(attn.qkvs))
        # operands qᵀ [B, N, key_dim], k [B, key_dim, N], v [B, val_dim, N], attnᵀ [B, N, N]
        scores = (Product("matmul", attn.scale, channels_a=(-1,), channels_b=(-2,)) for _ in heads)
        self.qk = nn.ModuleList(scores)
        self.softmax = nn.ModuleList(nn.Softmax(dim=-1) for _ in heads)
        self.av = nn.ModuleList(Product("matmul", channels_a=(-2,), channels_b=()) for _ in heads)

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        splits = x.chunk(len(self.qkvs), dim=1)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        feat, outputs = splits[0], []
        # one head after the other: each reads the output of the one before (the cascade)
        for head, split in enumerate(splits):
            feat = feat + split if head > 0 else feat
            q, k, v = self.qkvs[head](feat).split([self.key_dim, self.key_dim, self.val_dim], dim=1)
            q, k, v = self.dws[head](q).flatten(2), k.flatten(2), v.flatten(2)
            attn = self.softmax[head](self.qk[head](q.transpose(-2, -1), k) + bias[head])
            feat = self.av[head](v, attn.transpose(-2, -1)).view(batch, self.val_dim, height, width)
            outputs.append(feat)
        return self.proj(torch.cat(outputs, dim=1))


class ExplicitPatchMerging(nn.Module):
    """timm's ``PatchMerging`` (conv1, ReLU, conv2, ReLU, squeeze-and-excitation, conv3) with a
    ReLU of its own for each call (a converted module keeps state per call). Shares the original's
    submodules under their names."""

    def __init__(self, merging: msra.PatchMerging) -> None:
        super().__init__()
        self.conv1, self.act, self.conv2, self.se, self.conv3 = (
            merging.conv1,
            merging.act,
            merging.conv2,
            merging.se,
            merging.conv3,
        )
        self.act2 = copy.deepcopy(merging.act)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.se(self.act2(self.conv2(self.act(self.conv1(x))))))


register(msra.CascadedGroupAttention, Role.CONTAINER, twin=ExplicitCascadedGroupAttention)
register(msra.PatchMerging, Role.CONTAINER, twin=ExplicitPatchMerging)
# the stem's first convolution reads the image; the head is BatchNorm1d, Dropout, Linear
register(msra.EfficientVitMsra, Role.INPUT, links=partial(whole_network, classifier="head.linear"))
for cls in (
    ExplicitCascadedGroupAttention,
    ExplicitPatchMerging,
    msra.ConvNorm,
    msra.NormLinear,
    msra.ResidualDrop,
    msra.ConvMlp,
    msra.LocalWindowAttention,
    msra.EfficientVitBlock,
    msra.EfficientVitStage,
    msra.PatchEmbedding,
):
    register(cls, Role.CONTAINER)
