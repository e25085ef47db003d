"""Rules for timm's EfficientFormerV2 (Li et al. 2023, "Rethinking Vision Transformers for
MobileNet Size and Speed"; S0 to S2 and L).

Its attention works on 4D maps: q, k and v from 1×1 convolutions with BatchNorm, a depthwise
convolution of v added to the output, a bias per pixel offset (a constant, LeViT's), and
talking heads: 1×1 convolutions across the heads before and after the softmax, weight layers with
MT neurons, as CaiT's. In the last stages the attention runs on a map halved by a strided
depthwise convolution and is upsampled back (bilinear, linear); the downsampling between stages
adds an attention whose queries are a strided convolution plus a subsampling of the map (both
linear) to its convolution. One twin serves both attentions. Everything else is convolutions with
BatchNorm and GELU (EC modules) and LayerScale. The stem's first convolution reads the image; one
rate link runs from it to the heads (two, averaged, when distilled).
"""

from __future__ import annotations

from timm.models import efficientformer_v2 as v2
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import link_all


class ExplicitAttention2d(nn.Module):
    """timm's ``Attention2d`` and ``Attention2dDownsample`` with Q·Kᵀ (scaled), softmax and attn·V
    as modules, the offset bias a constant and the talking heads (when present) weight layers on
    the scores and on the map. The output's grid is q's (halved when downsampling). Shares the
    original's submodules and parameters under their names."""

    def __init__(self, attn: v2.Attention2d | v2.Attention2dDownsample) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.stride_conv = getattr(attn, "stride_conv", None)
        self.q, self.k, self.v, self.v_local = attn.q, attn.k, attn.v, attn.v_local
        self.talking_head1 = getattr(attn, "talking_head1", nn.Identity())
        self.talking_head2 = getattr(attn, "talking_head2", nn.Identity())
        self.attention_biases = attn.attention_biases
        self.register_buffer("attention_bias_idxs", attn.attention_bias_idxs, persistent=False)
        # operands [B, heads, N_q, key_dim] (q, and v with its width), [B, heads, key_dim, N] (k),
        # [B, heads, N_q, N] (attn)
        self.qk = Product("matmul", attn.scale, channels_a=(-3, -1), channels_b=(-3, -2))
        self.softmax = nn.Softmax(dim=-1)
        self.av = Product("matmul", channels_a=(-3,), channels_b=(-3, -1))
        self.upsample = getattr(attn, "upsample", None)
        self.act, self.proj = attn.act, attn.proj

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        q = self.q(x)
        height, width = q.shape[-2:]
        q = q.flatten(2).unflatten(1, (self.num_heads, -1)).transpose(-1, -2)
        k = self.k(x).flatten(2).unflatten(1, (self.num_heads, -1))
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.flatten(2).unflatten(1, (self.num_heads, -1)).transpose(-1, -2)
        scores = self.qk(q, k) + self.attention_biases[:, self.attention_bias_idxs]
        attn = self.talking_head2(self.softmax(self.talking_head1(scores)))
        out = self.av(attn, v).transpose(-1, -2).reshape(batch, -1, height, width) + v_local
        if self.upsample is not None:
            out = self.upsample(out)
        return self.proj(self.act(out))


def _links(model: v2.EfficientFormerV2) -> list:
    """One link from the stem to the heads; none for a headless model (its output is a sum)."""
    if isinstance(model.head, nn.Identity):
        return []
    return link_all(model, "head", *(["head_dist"] if model.head_dist is not None else []))


for cls in (v2.Attention2d, v2.Attention2dDownsample):
    register(cls, Role.CONTAINER, twin=ExplicitAttention2d)
register(v2.EfficientFormerV2, Role.INPUT, links=_links)  # the stem's first convolution reads the image
for cls in (
    ExplicitAttention2d,
    v2.ConvNorm,
    v2.LocalGlobalQuery,
    v2.Downsample,
    v2.ConvMlpWithNorm,
    v2.EfficientFormerV2Block,
    v2.Stem4,
    v2.EfficientFormerV2Stage,
):
    register(cls, Role.CONTAINER)
