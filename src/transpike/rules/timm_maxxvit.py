"""Rules for timm's ``MaxxVit`` class: MaxViT (Tu et al. 2022, the ``_tf`` ports and timm's ``_rw``
models), CoAtNet (Dai et al. 2021) and timm's MaxxViT and CoAtNeXt variants.

Every stage is a sequence of blocks of four kinds: convolution blocks (MBConv: BatchNorm, 1×1 and
depthwise convolutions with BatchNorm and activation, squeeze-and-excitation; or ConvNeXt blocks),
CoAtNet's Transformer blocks (attention over the whole feature map, with a pooled shortcut where
they downsample), MaxViT blocks (a convolution block, then attention inside windows and attention
on a dilated grid, each followed by an MLP) and the parallel variant that attends in windows and on
the grid side by side. Partitions and their reverses are linear; each attention adds a relative
position bias (a table gathered by an index, the TensorFlow ports' lookup einsum, or an MLP of
constant log-coordinates: all computed from parameters, so a ``constant``) to its scores;
squeeze-and-excitation (:mod:`.squeeze_excite`) multiplies the features by a sigmoid of their
channel means, a product of two spiking operands. Convolutions and Linears are weight layers with
MT neurons but for the stem's first convolution, which reads the image; norms, activations and the
head's Tanh become EC modules, BatchNorm in evaluation is affine, average pools are linear. One
rate link runs from the stem to the head's classifier. ``blocks=k`` counts every stage's blocks,
convolution blocks included.
"""

from __future__ import annotations

from timm.layers import activations as timm_act
from timm.layers.pos_embed_rel import RelPosBias, RelPosBiasTf, RelPosMlp
from timm.models.maxxvit import (
    Attention2d,
    AttentionCl,
    ConvNeXtBlock,
    Downsample2d,
    MaxxVit,
    MaxxVitBlock,
    MaxxVitStage,
    MbConvBlock,
    ParallelMaxxVitBlock,
    ParallelPartitionAttention,
    PartitionAttention2d,
    PartitionAttentionCl,
    Stem,
    TransformerBlock2d,
)
from torch import Tensor

from . import Role, register
from .links import whole_network
from .timm_twins import SoftmaxHeads


class ExplicitMaxxAttention(SoftmaxHeads):
    """timm's MaxxVit attentions with Q·Kᵀ, softmax and attn·V as modules (timm may call one fused
    kernel): ``AttentionCl`` on channels-last windows [B, ..., C] (MaxViT) and ``Attention2d`` on
    NCHW maps (CoAtNet), with q, k and v laid out head by head (``head_first``) or projection by
    projection. Shares the original's qkv, relative position module and proj under their names."""

    def __init__(self, attn: AttentionCl | Attention2d) -> None:
        super().__init__()
        self.num_heads, self.dim_head, self.head_first = attn.num_heads, attn.dim_head, attn.head_first
        self.channels_last = isinstance(attn, AttentionCl)
        self.qkv, self.rel_pos, self.proj, self.proj_drop = attn.qkv, attn.rel_pos, attn.proj, attn.proj_drop
        self._init_heads(attn)

    def _split(self, x: Tensor) -> tuple[Tensor, ...]:
        """q, k, v of [B, heads, tokens, dim_head]."""
        batch, heads, width = x.shape[0], self.num_heads, self.dim_head
        qkv = self.qkv(x)
        if not self.channels_last:  # [B, C, H, W] -> [B, tokens, C]
            qkv = qkv.flatten(2).transpose(1, 2)
        if self.head_first:  # q, k and v of each head in turn
            qkv = qkv.reshape(batch, -1, heads, 3, width).transpose(2, 3)
        return qkv.reshape(batch, -1, 3, heads, width).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: Tensor, shared_rel_pos: Tensor | None = None) -> Tensor:
        # the bias comes from parameters alone (or is given, the same at every step): a constant
        bias = self.rel_pos.get_bias() if self.rel_pos is not None else shared_rel_pos
        out = self.heads(*self._split(x), bias)  # [B, heads, tokens, dim_head]
        if self.channels_last:
            out = out.transpose(1, 2).reshape(*x.shape[:-1], -1)
        else:
            out = out.permute(0, 1, 3, 2).reshape(x.shape[0], -1, *x.shape[2:])
        return self.proj_drop(self.proj(out))


for cls in (AttentionCl, Attention2d):
    register(cls, Role.CONTAINER, twin=ExplicitMaxxAttention)
# the stem's first convolution reads the image
register(MaxxVit, Role.INPUT, links=whole_network)
for cls in (
    ExplicitMaxxAttention,
    Stem,
    MbConvBlock,
    ConvNeXtBlock,
    Downsample2d,
    TransformerBlock2d,
    PartitionAttentionCl,
    PartitionAttention2d,
    ParallelPartitionAttention,
    MaxxVitBlock,
    ParallelMaxxVitBlock,
    MaxxVitStage,
):
    register(cls, Role.CONTAINER)
for cls in (RelPosBias, RelPosBiasTf, RelPosMlp):
    register(cls, Role.CONSTANT)  # read through get_bias(): parameters only
for cls in (timm_act.Sigmoid, timm_act.Tanh):
    register(cls, Role.NONLINEAR)
