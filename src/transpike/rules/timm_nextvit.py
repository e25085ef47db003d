"""Rules for timm's Next-ViT (``NextViT``: Next-ViT-S/B/L), one of the models SIT-conversion
converts (METHODS.md §3.4).

Next-ViT is a hybrid of convolution blocks and Transformer blocks normalized by BatchNorm. In
evaluation BatchNorm is a per-channel affine map, as are the average pools of its patch embeddings
and of the efficient attention's spatial reduction, so they stay as they are; the ReLUs become EC
modules, every convolution and Linear gets an MT neuron (the stem's first convolution sees the
image at every step, as a ViT's patch embedding does), and the efficient attention's Q·Kᵀ, softmax
and attn·V convert as in a ViT. Residual sums and the concatenation of the attention and
convolution branches are linear, so the blocks, stages and the model are containers, and every
converted module passes rates (:mod:`transpike.rules.links`).
"""

from __future__ import annotations

from timm.layers import ConvMlp
from timm.models.nextvit import (
    ConvAttention,
    ConvNormAct,
    EfficientAttention,
    NextConvBlock,
    NextStage,
    NextTransformerBlock,
    NextViT,
    PatchEmbed,
)
from torch import Tensor

from . import Role, register
from .links import whole_network
from .timm_twins import SoftmaxHeads


class ExplicitEfficientAttention(SoftmaxHeads):
    """timm ``EfficientAttention`` (Next-ViT's E-MHSA) with Q·Kᵀ, softmax and attn·V as modules
    (timm may call one fused kernel): q from every token, k and v from tokens averaged over
    windows of ``sr_ratio²`` (``sr``) and batch-normed (``norm``), both affine. Shares the
    original's submodules under their names."""

    def __init__(self, attn: EfficientAttention) -> None:
        super().__init__()
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        self.q, self.k, self.v = attn.q, attn.k, attn.v
        self.sr, self.norm = attn.sr, attn.norm
        self._init_heads(attn)
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, channels = x.shape
        q = self.q(x).reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr is not None:
            x = self.norm(self.sr(x.transpose(1, 2))).transpose(1, 2)
        k = self.k(x).reshape(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).reshape(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)
        out = self.heads(q, k, v).transpose(1, 2).reshape(batch, tokens, channels)
        return self.proj_drop(self.proj(out))


register(EfficientAttention, Role.CONTAINER, twin=ExplicitEfficientAttention)
register(NextViT, Role.INPUT, links=whole_network)  # the stem's first convolution reads the image
for cls in (
    ExplicitEfficientAttention,
    ConvNormAct,
    ConvAttention,
    ConvMlp,
    PatchEmbed,
    NextConvBlock,
    NextTransformerBlock,
    NextStage,
):
    register(cls, Role.CONTAINER)
