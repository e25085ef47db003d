"""Rules for timm's ConViT (``ConVit``: ConViT-Ti to B; d'Ascoli et al. 2021, "ConViT: Improving
Vision Transformers with Soft Convolutional Inductive Biases").

ConViT is a ViT whose first blocks attend with gated positional self-attention (GPSA): each head
mixes the softmax of its content scores with a softmax of positional scores,
(1 − σ(λ))·softmax(Q·Kᵀ/√d) + σ(λ)·softmax(pos_proj(r)), where r holds the constant offsets
between patches, and applies the mixture to V. The positional map P and the gate are computed from
parameters alone (the same at every step), so the output is linear in the content map's product
with V: (1 − σ(λ))·softmax(Q·Kᵀ/√d)·V + σ(λ)·P·V. The twin keeps Q·Kᵀ, the softmax and attn·V
as modules (MT neurons on the content map and V), P·V as a constant matrix applied to V's layer
output (float work, charged in the full energy form), and the positional Linear as a constant.
Quantizing the mixture instead would spend the attention neurons' levels on P, the same at every
step: on a random-init ConViT-Ti, 9× the error at t = 1 with burst neurons. The later blocks
attend as a ViT's (timm's ``MHSA``, through the plain attention twin); the class token joins the
tokens before the first of them (a constant, concatenated). One rate link runs from the patch
embedding to the head.
"""

from __future__ import annotations

import math

import torch
from timm.models.convit import GPSA, MHSA, Block, ConVit
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import to_head
from .timm_twins import ExplicitAttention


def patch_offsets(tokens: int, like: Tensor) -> Tensor:
    """r of GPSA: for each pair of patches a, b of a square grid, (x_b - x_a, y_b - y_a, and the
    squared distance), [1, tokens, tokens, 3], as timm's ``GPSA.get_rel_indices``."""
    index, side = torch.arange(tokens, device=like.device), math.isqrt(tokens)
    y, x = index // side, index % side
    dx, dy = x[None, :] - x[:, None], y[None, :] - y[:, None]
    return torch.stack((dx, dy, dx**2 + dy**2), dim=-1).unsqueeze(0).to(like.dtype)


class ConstantLinear(nn.Linear):
    """GPSA's ``pos_proj``, which reads the constant table of patch offsets: what it computes is
    the same at every step, so it stays as it is (:attr:`Role.CONSTANT`)."""


class ExplicitGatedAttention(nn.Module):
    """timm ``GPSA`` with Q·Kᵀ, the content softmax and its product with V as modules; the
    positional softmax P and the gate are constants, and P·V a constant map of V. timm divides the
    mixture by its row sums, which are 1 (a convex mixture of two softmax maps): the twin leaves
    that division out. Shares the original's parameters under their names."""

    def __init__(self, attn: GPSA) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.qk, self.v = attn.qk, attn.v
        attn.pos_proj.__class__ = ConstantLinear  # the same parameters: the keys stay the ANN's
        self.pos_proj = attn.pos_proj
        self.gating_param = attn.gating_param
        # Operands [B, heads, tokens, head_dim] (q, v), [B, heads, head_dim, tokens] (kᵀ) and
        # [B, heads, tokens, tokens] (attn): per-channel thresholds per (head, head_dim) or per head.
        self.scores = Product("matmul", attn.scale, channels_a=(-3, -1), channels_b=(-3, -2))
        self.softmax = nn.Softmax(dim=-1)
        self.attn_drop = attn.attn_drop
        self.av = Product("matmul", 1.0, channels_a=(-3,), channels_b=(-3, -1))
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def positions(self, tokens: int) -> Tensor:
        """Each head's positional attention, softmax(pos_proj(r)): [1, heads, tokens, tokens]."""
        offsets = patch_offsets(tokens, self.gating_param)
        return self.pos_proj(offsets).permute(0, 3, 1, 2).softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, channels = x.shape
        q, k = self.qk(x).reshape(batch, tokens, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        v = self.v(x).reshape(batch, tokens, self.num_heads, -1).transpose(1, 2)
        content = self.softmax(self.scores(q, k.transpose(-2, -1)))
        gate = torch.sigmoid(self.gating_param).view(1, -1, 1, 1)
        positional = self.positions(tokens) @ v  # linear in v: no neuron, the same map at every step
        mixed = (1.0 - gate) * self.av(self.attn_drop(content), v) + gate * positional
        out = mixed.transpose(1, 2).reshape(batch, tokens, channels)
        return self.proj_drop(self.proj(out))


register(GPSA, Role.CONTAINER, twin=ExplicitGatedAttention)
register(MHSA, Role.CONTAINER, twin=ExplicitAttention)
register(ConVit, Role.CONTAINER, links=to_head)  # its patch embedding (or hybrid stem) reads the image
for cls in (ExplicitGatedAttention, Block):
    register(cls, Role.CONTAINER)
register(ConstantLinear, Role.CONSTANT)
