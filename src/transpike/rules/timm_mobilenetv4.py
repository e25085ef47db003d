"""Rules for timm's MobileNetV4 (Qin et al. 2024, "MobileNetV4: Universal Models for the Mobile
Ecosystem"; ``mobilenetv4_hybrid_medium`` and ``_large``, which attend in their last two stages,
and the convolution-only ``mobilenetv4_conv_*``), built by timm's ``MobileNetV3`` class.

Convolution blocks (fused inverted residuals, universal inverted residuals with their optional
depthwise convolutions, plain convolution blocks) are convolutions, BatchNorms and activations
joined by residual sums: containers. The hybrids' mobile multi-query attention lets every head
attend to one shared key and one shared value, each a 1×1 projection of the map (after a strided
depthwise convolution and a norm where the key and value maps are downsampled), the query
optionally average-pooled first and the output upsampled (bilinear: linear); its twin makes
Q·Kᵀ, the softmax and attn·V modules, the shared key and value broadcast over the heads. The
multi-head attention blocks (``mha`` in timm's architecture strings) get the same twin with a key
and a value per head. The stem's convolution reads the image, and one rate link runs from it to
the classifier.
"""

from __future__ import annotations

from timm.layers.attention2d import Attention2d, MultiQueryAttention2d
from timm.models._efficientnet_blocks import (
    ConvBnAct,
    EdgeResidual,
    MobileAttention,
    UniversalInvertedResidual,
)
from timm.models.mobilenetv3 import MobileNetV3
from torch import Tensor, nn

from . import Link, Role, register
from .links import link_all
from .timm_twins import SoftmaxHeads, refuse_mask


class ExplicitMultiQueryAttention2d(SoftmaxHeads):
    """timm ``MultiQueryAttention2d``: per head softmax(q·kᵀ/√d)·v with one key k and one value v
    for all heads ([B, 1, positions, d], broadcast), then ``output``; Q·Kᵀ, the softmax and attn·V as
    modules. Shares the original's ``query``, ``key``, ``value`` and ``output`` under their names."""

    def __init__(self, attn: MultiQueryAttention2d) -> None:
        super().__init__()
        self.query, self.key, self.value, self.output = attn.query, attn.key, attn.value, attn.output
        self.num_heads, self.key_dim, self.query_strides = attn.num_heads, attn.key_dim, attn.query_strides
        self._init_heads(attn)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        refuse_mask(attn_mask)
        batch, _, height, width = x.shape
        q = self.query(x).reshape(batch, self.num_heads, self.key_dim, -1).transpose(-1, -2)
        k, v = (
            self.key(x).flatten(2).transpose(1, 2).unsqueeze(1),
            self.value(x).flatten(2).transpose(1, 2).unsqueeze(1),
        )
        heads = self.heads(q, k, v)  # [B, heads, positions, value_dim]
        size = (height // self.query_strides[0], width // self.query_strides[1])
        return self.output(heads.transpose(1, 2).reshape(batch, *size, -1).permute(0, 3, 1, 2))


class ExplicitAttention2d(SoftmaxHeads):
    """timm ``Attention2d``: q, k, v per head from one 1×1 convolution, softmax(q·kᵀ/√d)·v over
    the map's positions, then ``proj``; Q·Kᵀ, the softmax and attn·V as modules. Shares the
    original's ``qkv`` and ``proj`` under their names."""

    def __init__(self, attn: Attention2d) -> None:
        super().__init__()
        self.qkv, self.proj, self.proj_drop = attn.qkv, attn.proj, attn.proj_drop
        self.num_heads, self.dim_head, self.head_first = attn.num_heads, attn.dim_head, attn.head_first
        self._init_heads(attn, scale=attn.dim_head**-0.5)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        refuse_mask(attn_mask)
        batch, _, height, width = x.shape
        qkv = self.qkv(x)
        if self.head_first:
            q, k, v = qkv.view(batch, self.num_heads, self.dim_head * 3, -1).chunk(3, dim=2)
        else:
            q, k, v = qkv.reshape(batch, 3, self.num_heads, self.dim_head, -1).unbind(1)
        heads = self.heads(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return self.proj_drop(self.proj(heads.transpose(-1, -2).reshape(batch, -1, height, width)))


def network_links(model: nn.Module) -> list[Link]:
    """One link from the stem to the classifier; none without a classifier (an encoder's output
    is a sum of producers)."""
    classifier = getattr(model, "classifier", None)
    return [] if classifier is None or isinstance(classifier, nn.Identity) else link_all(model, "classifier")


def stage_blocks(model: nn.Module) -> list[str]:
    """``blocks=k``'s blocks: every stage's blocks in turn."""
    return [f"blocks.{s}.{b}" for s, stage in enumerate(model.blocks) for b in range(len(stage))]


register(MultiQueryAttention2d, Role.CONTAINER, twin=ExplicitMultiQueryAttention2d)
register(Attention2d, Role.CONTAINER, twin=ExplicitAttention2d)
# the stem's convolution reads the image
register(MobileNetV3, Role.INPUT, links=network_links, blocks=stage_blocks)
for cls in (
    ExplicitMultiQueryAttention2d,
    ExplicitAttention2d,
    ConvBnAct,
    EdgeResidual,
    UniversalInvertedResidual,
    MobileAttention,
):
    register(cls, Role.CONTAINER)
