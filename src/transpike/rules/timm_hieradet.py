"""Rules for timm's HieraDet, the Hiera of SAM 2's image encoder (``sam2_hiera_*``,
``hieradet_small``).

Unlike the Hiera of :mod:`~transpike.rules.timm_hiera`, HieraDet keeps its tokens as channels-last
maps: its blocks attend within windows (zero-padded, linear) or over the whole map, and where a
stage begins they max-pool q and the block's projected residual with ``nn.MaxPool2d`` modules
(EC modules, like any max pool). Its attention runs one fused kernel, so it gets an explicit twin;
the position embeddings (a global one resized to the map plus a tiled window one: parameters alone)
are constants added to the patch embedding, whose projection reads the image. The head is the
ClNormMlpClassifierHead of Hiera (its max pools refused), and one rate link runs from the patch
embedding to the head's classifier.
"""

from __future__ import annotations

from timm.models import hieradet_sam2
from torch import Tensor

from . import Role, register
from .links import whole_network
from .timm_twins import SoftmaxHeads


class ExplicitMultiScaleAttention(SoftmaxHeads):
    """timm's HieraDet ``MultiScaleAttention`` with Q·Kᵀ, softmax and attn·V as modules, on
    [B, H, W, C] maps: q, k, v from one Linear, q max-pooled over the stride by the original's
    ``q_pool`` module where a stage begins. Shares the original's submodules under their names."""

    def __init__(self, attn: hieradet_sam2.MultiScaleAttention) -> None:
        super().__init__()
        self.num_heads, self.qkv, self.q_pool, self.proj = attn.num_heads, attn.qkv, attn.q_pool, attn.proj
        self._init_heads(attn)

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, _ = x.shape
        q, k, v = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1).unbind(2)
        if self.q_pool is not None:
            q = self.q_pool(q.reshape(batch, height, width, -1).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            height, width = q.shape[1:3]
            q = q.reshape(batch, height * width, self.num_heads, -1)
        out = self.heads(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(batch, height, width, -1))


register(hieradet_sam2.MultiScaleAttention, Role.CONTAINER, twin=ExplicitMultiScaleAttention)
for cls in (ExplicitMultiScaleAttention, hieradet_sam2.MultiScaleBlock):
    register(cls, Role.CONTAINER)
register(hieradet_sam2.HieraDet, Role.CONTAINER, links=whole_network)
register(hieradet_sam2.HieraPatchEmbed, Role.INPUT)  # its projection reads the image
