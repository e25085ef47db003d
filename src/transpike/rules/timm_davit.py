"""Rules for timm's DaViT (``DaVit``: DaViT-T to G; Ding et al. 2022, "DaViT: Dual Attention
Vision Transformers").

DaViT alternates two blocks on a feature map: spatial blocks attend within windows of pixels (as
Swin's windows, without position bias or shift: padding and window partition are linear), channel
blocks attend across channels, each head's channels to each other over all pixels. Before each
attention and each MLP a convolutional position encoding adds a depthwise convolution of the map
to itself. Channel attention (V1) is softmax((K/√d)ᵀ·V) applied to Q, V2 is softmax((Q·s)ᵀ·K)
applied to V (s = N^-1/2 with ``dynamic_scale``, else d^-1/2): both a [d × d] map per head from a
product of two spiking operands and its application to the third, a second product, with the
scale a constant factor on the first operand (linear). The stem's convolution reads the image;
every other convolution and Linear is a weight layer with its MT neuron; LayerNorms and GELU are
EC modules. One rate link runs from the stem to the head's classifier. ``blocks=k`` counts the
dual blocks (a spatial block and a channel block) stage by stage.
"""

from __future__ import annotations

from timm.models.davit import (
    ChannelAttention,
    ChannelAttentionV2,
    ChannelBlock,
    ConvPosEnc,
    DaVit,
    DaVitStage,
    Downsample,
    SpatialBlock,
    Stem,
    WindowAttention,
)
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import whole_network
from .timm_twins import ExplicitAttention, split_qkv


class ExplicitChannelAttention(nn.Module):
    """timm DaViT ``ChannelAttention`` and ``ChannelAttentionV2`` with both products and the softmax
    as modules: out = (softmax(Aᵀ·B)·Cᵀ)ᵀ per head, (A, B, C) = (K·s, V, Q) in V1 and (Q·s, K, V)
    in V2. Shares the original's submodules under their names."""

    def __init__(self, attn: ChannelAttention | ChannelAttentionV2) -> None:
        super().__init__()
        self.version = 2 if isinstance(attn, ChannelAttentionV2) else 1
        self.num_heads = attn.groups if self.version == 2 else attn.num_heads
        self.head_dim = attn.head_dim if self.version == 2 else None
        self.dynamic_scale = self.version == 2 and attn.dynamic_scale
        self.scale = None if self.version == 2 else attn.scale
        self.qkv, self.proj = attn.qkv, attn.proj
        # Operands [B, heads, d, tokens] (Aᵀ, C's transpose taken after) and [B, heads, tokens, d];
        # the map [B, heads, d, d]: per-channel thresholds per (head, channel) or per head.
        self.scores = Product("matmul", 1.0, channels_a=(-3, -2), channels_b=(-3, -1))
        self.softmax = nn.Softmax(dim=-1)
        self.apply_map = Product("matmul", 1.0, channels_a=(-3,), channels_b=(-3, -2))

    def _scale(self, tokens: int) -> float:
        if self.version == 1:
            return self.scale
        return tokens**-0.5 if self.dynamic_scale else self.head_dim**-0.5

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, channels = x.shape
        q, k, v = split_qkv(self.qkv(x), self.num_heads)
        a, b, c = (k, v, q) if self.version == 1 else (q, k, v)
        attn = self.softmax(self.scores((a * self._scale(tokens)).transpose(-1, -2), b))
        out = self.apply_map(attn, c.transpose(-1, -2)).transpose(-1, -2)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, channels))


for cls in (ChannelAttention, ChannelAttentionV2):
    register(cls, Role.CONTAINER, twin=ExplicitChannelAttention)
register(WindowAttention, Role.CONTAINER, twin=ExplicitAttention)
register(DaVit, Role.INPUT, links=whole_network)  # the stem's convolution reads the image
for cls in (ExplicitChannelAttention, ChannelBlock, ConvPosEnc, DaVitStage, Downsample, SpatialBlock, Stem):
    register(cls, Role.CONTAINER)
