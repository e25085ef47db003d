"""Rules for timm's EdgeNeXt (``EdgeNeXt``: XX-S, X-S, S, B and the ``_rw`` variants), one of the
models SIT-conversion converts (METHODS.md §3.4).

EdgeNeXt stacks convolution blocks (a depthwise convolution, then LayerNorm and an MLP on each
position, as in ConvNeXt) and split-transpose blocks: depthwise convolutions over channel groups
in cascade, a Fourier position encoding, and cross-covariance attention (XCA), which attends over
channels instead of tokens: softmax(τ · Q̂·K̂ᵀ)·V, where Q̂ and K̂ are q and k normalized to unit L2
norm over the tokens and τ is a learned temperature per head. The normalizations are nonlinear in
each operand, so each becomes an EC module before the product's MT neurons; Q·Kᵀ, softmax and
attn·V convert as in a ViT. The channel groups' cascade (chunk, add, concatenate), LayerScale's
γ, residual sums and the average pool are linear; the position encoding depends only on the
grid's size: a constant, the same at every step (its own rate). The stem's convolution sees the
image at every step, as a ViT's patch embedding does. Every converted module passes rates
(:mod:`transpike.rules.links`).
"""

from __future__ import annotations

from timm.layers import NormMlpClassifierHead
from timm.models.edgenext import (
    ConvBlock,
    CrossCovarianceAttn,
    EdgeNeXt,
    EdgeNeXtStage,
    PositionalEncodingFourier,
    SplitTransposeBlock,
)
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import whole_network
from .timm_twins import L2Normalize


class ExplicitCrossCovarianceAttn(nn.Module):
    """timm ``CrossCovarianceAttn`` with the normalizations, Q̂·K̂ᵀ, softmax and attn·V as modules.
    Shares the original's qkv, temperature and proj under their names."""

    def __init__(self, attn: CrossCovarianceAttn) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.qkv, self.temperature = attn.qkv, attn.temperature
        self.q_norm, self.k_norm = L2Normalize(), L2Normalize()
        # operands are [B, heads, head_dim, tokens] (q̂, v), [B, heads, tokens, head_dim] (k̂ᵀ) and
        # [B, heads, head_dim, head_dim] (attn): per-channel thresholds per (head, channel) or per head
        self.qk = Product("matmul", 1.0, channels_a=(-3, -2), channels_b=(-3, -1))
        self.softmax = nn.Softmax(dim=-1)
        self.attn_drop = attn.attn_drop
        self.av = Product("matmul", 1.0, channels_a=(-3,), channels_b=(-3, -2))
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, channels = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 4, 1).unbind(0)
        # τ per head scales the scores: a constant factor, linear
        scores = self.qk(self.q_norm(q), self.k_norm(k).transpose(-2, -1)) * self.temperature
        out = self.av(self.attn_drop(self.softmax(scores)), v)
        return self.proj_drop(self.proj(out.permute(0, 3, 1, 2).reshape(batch, tokens, channels)))


register(CrossCovarianceAttn, Role.CONTAINER, twin=ExplicitCrossCovarianceAttn)
register(PositionalEncodingFourier, Role.CONSTANT)  # a function of the grid's size
register(EdgeNeXt, Role.INPUT, links=whole_network)  # the stem's convolution reads the image
for cls in (
    ExplicitCrossCovarianceAttn,
    ConvBlock,
    SplitTransposeBlock,
    EdgeNeXtStage,
    NormMlpClassifierHead,
):
    register(cls, Role.CONTAINER)
