"""Rules for timm's ``SwinTransformerV2Cr`` (the Swin V2 of Christoph Reich's implementation:
``swinv2_cr_tiny_224`` to ``swinv2_cr_giant_*``, including the ``_ns`` models with extra norms).

As timm's Swin V2 (:mod:`.timm_swinv2`): windows, cyclic shifts with their mask, padding and patch
merging are linear; the attention is cosine attention, τ·Q̂·K̂ᵀ with Q̂ and K̂ normalized per token
by EC modules before the product and τ = exp(min(logit_scale, ln 100)) a constant per head; the
position bias is a "meta" MLP of constant log-spaced coordinates (here without Swin V2's 16·σ),
a constant module, not converted; the blocks normalize after the attention and the MLP (residual
post-norm, and every few blocks of the large models an extra norm on the residual stream). The
patch embedding's convolution reads the image. Between converted modules the model only sums,
shifts, pads, partitions and adds constants, so one rate link runs from the patch embedding to the
head's classifier. ``blocks=k`` counts every stage's blocks.
"""

from __future__ import annotations

from timm.layers import Mlp
from timm.models.swin_transformer_v2_cr import (
    PatchEmbed,
    PatchMerging,
    SwinTransformerV2Cr,
    SwinTransformerV2CrBlock,
    SwinTransformerV2CrStage,
    WindowMultiHeadAttention,
)
from torch import Tensor

from . import Role, register
from .links import whole_network
from .timm_swin import with_mask
from .timm_swinv2 import temperature
from .timm_twins import L2Normalize, SoftmaxHeads, split_qkv


class ConstantMetaMlp(Mlp):
    """The attention's position-bias MLP (``meta_mlp``), which reads a constant coordinate table:
    what it computes is the same at every step, so it stays as it is (:attr:`Role.CONSTANT`)."""


class ExplicitMetaWindowAttention(SoftmaxHeads):
    """timm ``WindowMultiHeadAttention`` (Swin V2 Cr) with the normalizations of q and k, Q̂·K̂ᵀ,
    softmax and attn·V as modules. Shares the original's parameters under their names."""

    def __init__(self, attn: WindowMultiHeadAttention) -> None:
        super().__init__()
        self.num_heads, self.logit_scale = attn.num_heads, attn.logit_scale
        self.qkv, self.proj, self.proj_drop = attn.qkv, attn.proj, attn.proj_drop
        attn.meta_mlp.__class__ = ConstantMetaMlp  # the same children: the keys stay the ANN's
        self.meta_mlp = attn.meta_mlp
        self.register_buffer("relative_coordinates_log", attn.relative_coordinates_log, persistent=False)
        self._init_heads(attn, scale=1.0)  # τ multiplies Q̂ instead
        self.q_norm, self.k_norm = L2Normalize(), L2Normalize()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: [windows·B, tokens, C]; mask: [windows, tokens, tokens] (0 or -100) or None."""
        batch, tokens, _ = x.shape
        q, k, v = split_qkv(self.qkv(x), self.num_heads)
        q, k = self.q_norm(q) * temperature(self.logit_scale).view(-1, 1, 1), self.k_norm(k)
        bias = self.meta_mlp(self.relative_coordinates_log).transpose(1, 0).reshape(-1, tokens, tokens)
        out = self.heads(q, k, v, with_mask(bias, mask, batch))
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, tokens, -1)))


register(WindowMultiHeadAttention, Role.CONTAINER, twin=ExplicitMetaWindowAttention)
register(ConstantMetaMlp, Role.CONSTANT)
register(PatchEmbed, Role.INPUT)  # its convolution reads the image
register(SwinTransformerV2Cr, Role.CONTAINER, links=whole_network)
for cls in (ExplicitMetaWindowAttention, SwinTransformerV2CrBlock, SwinTransformerV2CrStage, PatchMerging):
    register(cls, Role.CONTAINER)
