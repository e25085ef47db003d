"""Rules for timm's EfficientViT from MIT (Cai et al. 2023, "EfficientViT: Multi-Scale Linear
Attention for High-Resolution Dense Prediction"; ``EfficientVit``, B0 to B3, and
``EfficientVitLarge``, L1 to L3).

Its attention is linear (LiteMLA): q, k and v come from a 1×1 convolution and, at more scales,
from depthwise and grouped convolutions of it; the kernel ReLU (an EC module each for q and k)
replaces the softmax, and each head computes ReLU(q)·ReLU(k)ᵀ·v and its normalizer ReLU(q)·Σ_N ReLU(k) (three
products of spiking operands: timm gets the normalizer as the last column of one product, from a
column of ones padded to v; the sum over tokens is linear), then divides the one by the other
(:class:`LinearAttentionNorm`, an EC module). Everything
else is convolutions with BatchNorm and Hardswish (EC modules) in residual blocks; the classifier
ends in a Linear, LayerNorm, Hardswish and a Linear. The stem's convolution reads the image; one
rate link runs from it to the last Linear.
"""

from __future__ import annotations

import copy
from functools import partial

import torch
from timm.models import efficientvit_mit as mit
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import whole_network


class LinearAttentionNorm(nn.Module):
    """out[..., :-1] / (out[..., -1:] + ε): each token's attention output over its normalizer,
    q·Σ_N k, which LiteMLA carries as the last column (Katharopoulos et al. 2020, eq. 5)."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x[..., :-1] / (x[..., -1:] + self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class ExplicitLiteMLA(nn.Module):
    """timm's ``LiteMLA`` with its kernels, products and normalization as modules. Shares the
    original's submodules under their names; the kernel, which timm applies to q and k alike, is
    copied for k (a converted module keeps state per call). ReLU(q) is an operand of both the
    numerator and the normalizer, so it gets an MT neuron in each (the same input and thresholds:
    the same spikes, counted twice). Computes in the input's dtype (timm: float32)."""

    def __init__(self, attn: mit.LiteMLA) -> None:
        super().__init__()
        self.dim, self.qkv, self.aggreg, self.proj = attn.dim, attn.qkv, attn.aggreg, attn.proj
        self.kernel_func, self.k_kernel = attn.kernel_func, copy.deepcopy(attn.kernel_func)
        # operands [B, heads, d, N] (kᵀ), [B, heads, N, d] (v, q), [B, heads, d, d] (kᵀv), [B, heads, d, 1]
        # (Σk); timm multiplies q by [kᵀv, Σk] at once, but Σk, a sum over all tokens, is one to three
        # orders of magnitude above kᵀv's entries, which one threshold for both would round to zero
        self.kv = Product("matmul", channels_a=(-3, -2), channels_b=(-3, -1))
        self.numerator = Product("matmul", channels_a=(-3, -1), channels_b=(-3, -1))
        self.denominator = Product("matmul", channels_a=(-3, -1), channels_b=(-3,))
        self.normalize = LinearAttentionNorm(attn.eps)

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        qkv = self.qkv(x)
        qkv = torch.cat([qkv, *(op(qkv) for op in self.aggreg)], dim=1)
        q, k, v = qkv.reshape(batch, -1, 3 * self.dim, height * width).transpose(-1, -2).chunk(3, dim=-1)
        q, k = self.kernel_func(q), self.k_kernel(k).transpose(-1, -2)
        numerator = self.numerator(q, self.kv(k, v))
        out = self.normalize(torch.cat([numerator, self.denominator(q, k.sum(-1, keepdim=True))], dim=-1))
        return self.proj(out.transpose(-1, -2).reshape(batch, -1, height, width))


def _block_paths(model: mit.EfficientVit | mit.EfficientVitLarge) -> list[str]:
    """Every stage's blocks in turn, the convolution blocks included."""
    stages = enumerate(model.stages)
    return [f"stages.{s}.blocks.{b}" for s, stage in stages for b, _ in enumerate(stage.blocks)]


register(mit.LiteMLA, Role.CONTAINER, twin=ExplicitLiteMLA)
register(LinearAttentionNorm, Role.NONLINEAR)
links = partial(whole_network, classifier="head.classifier.4")  # Linear, LayerNorm, act, Dropout, Linear
for cls in (mit.EfficientVit, mit.EfficientVitLarge):  # the stem's first convolution reads the image
    register(cls, Role.INPUT, links=links, blocks=_block_paths)
for cls in (
    ExplicitLiteMLA,
    mit.ConvNormAct,
    mit.DSConv,
    mit.ConvBlock,
    mit.MBConv,
    mit.FusedMBConv,
    mit.EfficientVitBlock,
    mit.ResidualBlock,
    mit.Stem,
    mit.EfficientVitStage,
    mit.EfficientVitLargeStage,
    mit.ClassifierHead,
):
    register(cls, Role.CONTAINER)
