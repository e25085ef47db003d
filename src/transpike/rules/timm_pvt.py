"""Rules for timm's Pyramid Vision Transformer v2 (``PyramidVisionTransformerV2``: PVT-v2-B0 to B5
and B2-Li; Wang et al. 2022, "PVT v2: Improved baselines with Pyramid Vision Transformer").

PVT v2 is a four-stage pyramid of pre-norm Transformer blocks. Its attention takes q from the
tokens and k, v from a spatially reduced copy of them: a strided convolution (``sr``) then a
LayerNorm, or, in the linear variant (``_li``), an average pool to 7×7, a 1×1 convolution, a
LayerNorm and a GELU. The reduction's convolution is a weight layer with its MT neuron, its norm
and GELU become EC modules and the pool is linear; Q·Kᵀ and attn·V multiply two spiking operands as
in a ViT. The MLP runs a depthwise 3×3 convolution between its Linears (a weight layer like them;
the linear variant's extra ReLU an EC module). Overlapping patch embeddings (strided convolutions
and a LayerNorm) open every stage: the first one's convolution sees the image at every step, the
later ones get MT neurons. Between converted modules the model only reshapes, sums and averages,
so one rate link runs from the first patch embedding to the head. ``blocks=k`` counts the stages'
blocks in turn.
"""

from __future__ import annotations

from timm.models.pvt_v2 import (
    Attention,
    Block,
    MlpWithDepthwiseConv,
    OverlapPatchEmbed,
    PyramidVisionTransformerStage,
    PyramidVisionTransformerV2,
)
from torch import Tensor, nn

from . import Role, register
from .links import to_head
from .timm_twins import SoftmaxHeads


class ExplicitReductionAttention(SoftmaxHeads):
    """timm's PVT v2 ``Attention`` (and Twins' ``GlobalSubSampleAttn``) with Q·Kᵀ, softmax and attn·V
    as modules (timm may call one fused kernel). Shares the original's q, kv, proj and the
    reduction's pool, sr, norm and act."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.num_heads, self.head_dim = attn.num_heads, attn.q.out_features // attn.num_heads
        self.q, self.kv = attn.q, attn.kv
        # the reduction of the keys' and values' tokens, in order; parts a variant lacks are None
        # (Twins' global sub-sampled attention has neither pool nor act)
        self.sr, self.norm = attn.sr, attn.norm
        self.pool, self.act = getattr(attn, "pool", None), getattr(attn, "act", None)
        self._init_heads(attn)
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def forward(self, x: Tensor, feat_size: list[int]) -> Tensor:
        batch, tokens, channels = x.shape
        q = self.q(x).reshape(batch, tokens, self.num_heads, -1).transpose(1, 2)
        if self.sr is not None:
            grid = x.transpose(1, 2).reshape(batch, channels, *feat_size)
            grid = self.sr(grid if self.pool is None else self.pool(grid))
            x = self.norm(grid.reshape(batch, channels, -1).transpose(1, 2))
            x = x if self.act is None else self.act(x)
        kv = self.kv(x).reshape(batch, -1, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        out = self.heads(q, k, v).transpose(1, 2).reshape(batch, tokens, channels)
        return self.proj_drop(self.proj(out))


register(Attention, Role.CONTAINER, twin=ExplicitReductionAttention)
# the first patch embedding's convolution reads the image; one rate link to the head
register(PyramidVisionTransformerV2, Role.INPUT, links=to_head)
for cls in (
    ExplicitReductionAttention,
    Block,
    MlpWithDepthwiseConv,
    OverlapPatchEmbed,
    PyramidVisionTransformerStage,
):
    register(cls, Role.CONTAINER)
