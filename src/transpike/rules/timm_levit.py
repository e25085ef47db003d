"""Rules for timm's LeViT (``Levit`` and ``LevitDistilled``: LeViT-128S to 384 and the ``_conv``
variants that keep feature maps; Graham et al. 2021, "LeViT: a Vision Transformer in ConvNet's
Clothing for Faster Inference").

LeViT normalizes with BatchNorm after every Linear or convolution (affine in evaluation) and uses
Hardswish, an EC module, in its stem, its MLPs and before each attention's projection. Its
attention splits q, k and v with v wider than q and k and adds a learned bias per head and
relative offset to the scores, gathered from parameters by a constant index: a constant. Between
stages, an attention block takes its queries from a subsampled grid (a strided selection or an
average pool: linear) and its keys and values from the full one. Q·Kᵀ and attn·V multiply two
spiking operands as in a ViT. The stem's first convolution reads the image; every other weight
layer gets an MT neuron. Between converted modules the model only reshapes, sums and averages, so
one rate link runs from the stem to the classifier (both classifiers, averaged, in the distilled
model). ``blocks=k`` counts every stage's blocks, the downsampling attention blocks not included.
"""

from __future__ import annotations

from timm.models.levit import (
    Attention,
    AttentionDownsample,
    ConvNorm,
    Downsample,
    Levit,
    LevitBlock,
    LevitDistilled,
    LevitDownsample,
    LevitMlp,
    LevitStage,
    LinearNorm,
    NormLinear,
    Stem8,
    Stem16,
)
from torch import Tensor, nn

from ..compensation import ExpectationCompensation
from . import Link, Role, register
from .links import link_all
from .timm_twins import SoftmaxHeads


class ExplicitLevitAttention(SoftmaxHeads):
    """timm's LeViT ``Attention`` or ``AttentionDownsample`` with Q·Kᵀ, softmax and attn·V as
    modules, on tokens ([B, N, C]) or feature maps ([B, C, H, W], ``use_conv``). Shares the
    original's projections and attention biases under their names."""

    def __init__(self, attn: Attention | AttentionDownsample) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim = attn.num_heads, attn.key_dim, attn.val_dim
        self.use_conv = attn.use_conv
        self.downsampling = isinstance(attn, AttentionDownsample)
        if self.downsampling:  # queries from the subsampled grid
            self.kv, self.q = attn.kv, attn.q
        else:
            self.qkv = attn.qkv
        self.proj = attn.proj
        self.attention_biases = attn.attention_biases
        self.register_buffer("attention_bias_idxs", attn.attention_bias_idxs, persistent=False)
        self._init_heads(attn)

    def per_head(self, x: Tensor) -> Tensor:
        """[B, N, C] or [B, C, H, W] (each head's channels together) to [B, heads, N, C / heads]."""
        if self.use_conv:
            return x.flatten(2).unflatten(1, (self.num_heads, -1)).transpose(-2, -1)
        return x.unflatten(2, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        if self.downsampling:
            queries = self.q(x)
            q = self.per_head(queries)
            k, v = self.per_head(self.kv(x)).split([self.key_dim, self.val_dim], dim=-1)
        else:
            queries = x
            q, k, v = self.per_head(self.qkv(x)).split([self.key_dim, self.key_dim, self.val_dim], dim=-1)
        out = self.heads(q, k, v, self.attention_biases[:, self.attention_bias_idxs])
        if self.use_conv:  # back to [B, heads · val_dim, H', W']
            out = out.transpose(-2, -1).reshape(x.shape[0], -1, *queries.shape[2:])
        else:
            out = out.transpose(1, 2).reshape(x.shape[0], queries.shape[1], -1)
        return self.proj(out)


def _model_links(levit: Levit) -> list[Link]:
    """One link from the stem to the classifiers (their Linears, or the heads themselves when
    ``blocks=k`` leaves them analog); none for a headless model."""
    heads = [name for name in ("head", "head_dist") if hasattr(levit, name)]
    if isinstance(levit.head, nn.Identity):
        return []
    return link_all(levit, *(name if _analog(getattr(levit, name)) else f"{name}.linear" for name in heads))


def _analog(head: nn.Module) -> bool:
    return isinstance(head, ExpectationCompensation)  # left analog by blocks=k


for cls in (Attention, AttentionDownsample):
    register(cls, Role.CONTAINER, twin=ExplicitLevitAttention)
for cls in (Levit, LevitDistilled):  # the stem's first convolution reads the image
    register(cls, Role.INPUT, links=_model_links)
for cls in (
    ExplicitLevitAttention,
    ConvNorm,
    LinearNorm,
    NormLinear,
    Stem8,
    Stem16,
    Downsample,
    LevitMlp,
    LevitBlock,
    LevitDownsample,
    LevitStage,
):
    register(cls, Role.CONTAINER)
