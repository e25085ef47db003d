"""Rules for timm's Twins (``Twins``: Twins-PCPVT and Twins-SVT; Chu et al. 2021, "Twins:
Revisiting the Design of Spatial Attention in Vision Transformers").

Twins stacks pre-norm Transformer blocks in four stages of overlapping-free patch embeddings. Its
global sub-sampled attention takes keys and values from a strided convolution and a LayerNorm of
the tokens, as PVT v2's attention does (the same twin, :mod:`.timm_pvt`); Twins-SVT alternates it
with locally grouped attention, self-attention inside windows of the (zero-padded) token grid,
whose padding, partition and reverse are linear. After each stage's first block a positional
encoding generator adds a depthwise convolution of the tokens to them: a weight layer with its MT
neuron and a sum. The first patch embedding's convolution reads the image. One rate link runs from
it to the head. ``blocks=k`` counts the stages' blocks in turn; the positional encoding
generators, registered after all blocks in timm's layout, stay analog whenever a block does.
"""

from __future__ import annotations

import torch.nn.functional as F
from timm.models.twins import Block, GlobalSubSampleAttn, LocallyGroupedAttn, PatchEmbed, PosConv, Twins
from torch import Tensor

from . import Role, register
from .links import to_head
from .timm_pvt import ExplicitReductionAttention
from .timm_twins import SoftmaxHeads, split_qkv


class ExplicitGroupedAttn(SoftmaxHeads):
    """timm's Twins ``LocallyGroupedAttn`` with Q·Kᵀ, softmax and attn·V as modules (timm may call
    one fused kernel). Shares the original's qkv and proj. As timm does, the padding's zero tokens
    take part in the attention (their keys and values are qkv's bias)."""

    def __init__(self, attn: LocallyGroupedAttn) -> None:
        super().__init__()
        self.num_heads, self.ws = attn.num_heads, attn.ws
        self.qkv, self.proj, self.proj_drop = attn.qkv, attn.proj, attn.proj_drop
        self._init_heads(attn)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        batch, _, channels = x.shape
        (height, width), ws = size, self.ws
        grid = F.pad(x.view(batch, height, width, channels), (0, 0, 0, (-width) % ws, 0, (-height) % ws))
        rows, cols = grid.shape[1] // ws, grid.shape[2] // ws
        windows = grid.view(batch, rows, ws, cols, ws, channels).transpose(2, 3).flatten(0, 2).flatten(1, 2)
        out = self.heads(*split_qkv(self.qkv(windows), self.num_heads)).transpose(1, 2)
        out = out.reshape(batch, rows, cols, ws, ws, channels).transpose(2, 3).flatten(1, 2).flatten(2, 3)
        return self.proj_drop(self.proj(out[:, :height, :width].reshape(batch, height * width, channels)))


def _blocks(twins: Twins) -> list[str]:
    """Each stage's blocks in turn."""
    return [f"blocks.{s}.{b}" for s, stage in enumerate(twins.blocks) for b in range(len(stage))]


register(GlobalSubSampleAttn, Role.CONTAINER, twin=ExplicitReductionAttention)
register(LocallyGroupedAttn, Role.CONTAINER, twin=ExplicitGroupedAttn)
register(Twins, Role.INPUT, links=to_head, blocks=_blocks)  # the first patch embedding reads the image
for cls in (ExplicitGroupedAttn, Block, PatchEmbed, PosConv):
    register(cls, Role.CONTAINER)
