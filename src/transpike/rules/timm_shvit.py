"""Rules for timm's SHViT (Yun & Ro 2024, "SHViT: Single-Head Vision Transformer with
Memory Efficient Macro Design"; S1 to S4).

Its attention is single-headed on a part of the channels: the first pdim channels are normed
(GroupNorm, an EC module), projected to q, k and v by a 1×1 convolution with BatchNorm, and attend
over the pixels (Q·Kᵀ scaled, softmax, attn·V as modules in the twin); the other channels pass
untouched, and the projection of both starts with a ReLU (an EC module). Everything else is
depthwise and pointwise convolutions with BatchNorm and ReLU (EC modules) in residual blocks, and
patch merging with squeeze-and-excitation. The stem's first convolution reads the image; one rate
link runs from it to the head's Linear, behind a BatchNorm.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.models import shvit
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import whole_network


class ExplicitSingleHeadAttention(nn.Module):
    """timm's ``SHSA`` with Q·Kᵀ (scaled), the softmax and attn·V as modules, on the first pdim
    channels; the rest joins the output unchanged before the projection. Shares the original's
    submodules under their names."""

    def __init__(self, attn: shvit.SHSA) -> None:
        super().__init__()
        self.qk_dim, self.dim, self.pdim = attn.qk_dim, attn.dim, attn.pdim
        self.pre_norm, self.qkv, self.proj = attn.pre_norm, attn.qkv, attn.proj
        # operands qᵀ [B, N, qk_dim], k [B, qk_dim, N], v [B, pdim, N], attnᵀ [B, N, N]
        self.qk = Product("matmul", attn.scale, channels_a=(-1,), channels_b=(-2,))
        self.softmax = nn.Softmax(dim=-1)
        self.av = Product("matmul", channels_a=(-2,), channels_b=())

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        attended, passed = torch.split(x, [self.pdim, self.dim - self.pdim], dim=1)
        qkv = self.qkv(self.pre_norm(attended))
        q, k, v = (t.flatten(2) for t in torch.split(qkv, [self.qk_dim, self.qk_dim, self.pdim], dim=1))
        attn = self.softmax(self.qk(q.transpose(-2, -1), k))
        attended = self.av(v, attn.transpose(-2, -1)).reshape(batch, self.pdim, height, width)
        return self.proj(torch.cat([attended, passed], dim=1))


register(shvit.SHSA, Role.CONTAINER, twin=ExplicitSingleHeadAttention)
# the stem's first convolution reads the image; the head is BatchNorm1d and a Linear
register(shvit.SHViT, Role.INPUT, links=partial(whole_network, classifier="head.l"))
for cls in (
    ExplicitSingleHeadAttention,
    shvit.Residual,
    shvit.Conv2dNorm,
    shvit.NormLinear,
    shvit.PatchMerging,
    shvit.FFN,
    shvit.BasicBlock,
    shvit.StageBlock,
):
    register(cls, Role.CONTAINER)
