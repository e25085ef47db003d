"""Rules for timm's MobileViT (Mehta & Rastegari 2022, "MobileViT: Light-weight, General-purpose,
and Mobile-friendly Vision Transformer") and MobileViT v2 ("Separable Self-attention for Mobile
Vision Transformers", 2022), both built by timm's ``ByobNet``.

A MobileViT block convolves its map, cuts it into patches and runs ViT blocks across the patches
at each pixel position of a patch (v1: timm's ``Block``, softmax attention), folds the map back,
projects it and, in v1, fuses it with the block's input by a convolution over both. Unfolding,
folding, the concatenation and the bilinear resize of a map whose size the patch does not divide
are linear, so the blocks are containers. v2's separable self-attention has a twin: one score per
token (a 1-channel projection) with a softmax over the patches, the context vector Σ_N k·softmax(q)
(a product of two spiking operands, then a sum), and ReLU(v) times that context (a second
product, the context broadcast over the patches). The inverted-residual blocks between them are
ByobNet's ``BottleneckBlock``: convolutions with BatchNorm and SiLU (EC modules), a residual sum.
The stem's convolution reads the image; one rate link runs from it to the classifier.
"""

from __future__ import annotations

from timm.models.byobnet import BottleneckBlock, ByobNet
from timm.models.mobilevit import (
    LinearSelfAttention,
    LinearTransformerBlock,
    MobileVitBlock,
    MobileVitV2Block,
)
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import whole_network


class ExplicitLinearSelfAttention(nn.Module):
    """timm's ``LinearSelfAttention`` (MobileViT v2) on [B, C, P, N] with its softmax and products
    as modules: q, k, v = W_qkv·x (1, C and C channels), context = Σ_N k ⊙ softmax_N(q) (each
    patch position P's own), out = W_out·(ReLU(v) ⊙ context). Shares the original's submodules
    under their names; self-attention only (timm's cross-attention, ``x_prev``, is refused). Serves
    transformers' ``MobileViTV2LinearSelfAttention`` too, the same module but for its dropouts'
    names (``attn_dropout``, none after the projection)."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.embed_dim, self.qkv_proj = attn.embed_dim, attn.qkv_proj
        self.softmax = nn.Softmax(dim=-1)
        self.attn_drop = attn.attn_drop if hasattr(attn, "attn_drop") else attn.attn_dropout
        # operands [B, C, P, N] and [B, 1, P, N] (context), [B, C, P, N] and [B, C, P, 1] (output):
        # channels are dimension -3
        self.context = Product("mul", channels_a=(-3,), channels_b=(-3,))
        self.value_act = nn.ReLU()
        self.gating = Product("mul", channels_a=(-3,), channels_b=(-3,))
        self.out_proj, self.out_drop = attn.out_proj, getattr(attn, "out_drop", nn.Identity())

    def forward(self, x: Tensor, x_prev: Tensor | None = None) -> Tensor:
        if x_prev is not None:
            raise ValueError("MobileViT v2's cross-attention (x_prev) is not converted; self-attention only")
        query, key, value = self.qkv_proj(x).split([1, self.embed_dim, self.embed_dim], dim=1)
        context = self.context(key, self.attn_drop(self.softmax(query))).sum(dim=-1, keepdim=True)
        return self.out_drop(self.out_proj(self.gating(self.value_act(value), context)))


def stage_blocks(model: nn.Module) -> list[str]:
    """Every block of every stage in turn (``stages`` a sequence of block sequences), the
    convolution ones included: MobileViT's inverted residuals, LowFormer's MBConvs."""
    return [f"stages.{s}.{b}" for s, stage in enumerate(model.stages) for b in range(len(stage))]


register(LinearSelfAttention, Role.CONTAINER, twin=ExplicitLinearSelfAttention)
# the stem's first convolution reads the image
register(ByobNet, Role.INPUT, links=whole_network, blocks=stage_blocks)
for cls in (ExplicitLinearSelfAttention, LinearTransformerBlock, MobileVitBlock, MobileVitV2Block):
    register(cls, Role.CONTAINER)
register(BottleneckBlock, Role.CONTAINER)  # the inverted residuals
