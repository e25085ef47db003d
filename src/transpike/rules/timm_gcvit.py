"""Rules for timm's GC ViT (``GlobalContextVit``: GC ViT-XXT to L; Hatamizadeh et al. 2023,
"Global Context Vision Transformers").

GC ViT attends within windows of a feature map, alternating local blocks (q, k and v from the
window's tokens) with global blocks, whose queries are the stage's global query: a map the size of
one window made from the whole stage input by MBConv blocks (depthwise convolution, GELU,
squeeze-and-excitation, pointwise convolution) and max pools, then repeated for every window. A
learned bias per relative offset is added to the scores (a constant). Downsampling and the stem
are MBConv blocks with LayerNorms and strided convolutions. timm hands every block the map and
the global query as two tensors; the converted copy hands it one, the map's tokens followed by the
global query's (each stage knows both sizes), and each block hands the global query on as it got
it, so that ``blocks=k`` can leave any block analog. The stem's first convolution reads the image;
one rate link runs from it to the head's classifier. ``blocks=k`` counts the blocks stage by stage.
"""

from __future__ import annotations

import torch
from timm.models.gcvit import (
    Downsample2d,
    FeatureBlock,
    GlobalContextVit,
    GlobalContextVitBlock,
    GlobalContextVitStage,
    MbConvBlock,
    Stem,
    WindowAttentionGlobal,
)
from torch import Tensor

from . import Role, register
from .links import whole_network
from .timm_twins import SoftmaxHeads, split_qkv


class ExplicitGlobalWindowAttention(SoftmaxHeads):
    """timm ``WindowAttentionGlobal`` with Q·Kᵀ, softmax and attn·V as modules and the relative
    position bias a constant on the scores: q from the window's tokens, or (global blocks) the
    global query [B, window tokens, C] repeated for each of the B·windows windows. Shares the
    original's submodules under their names."""

    def __init__(self, attn: WindowAttentionGlobal) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.use_global = attn.num_heads, attn.head_dim, attn.use_global
        self.qkv, self.rel_pos = attn.qkv, attn.rel_pos
        self._init_heads(attn)
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def forward(self, x: Tensor, q_global: Tensor | None = None) -> Tensor:
        windows, tokens, channels = x.shape
        if self.use_global and q_global is not None:
            k, v = self.qkv(x).reshape(windows, tokens, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
            q = q_global.repeat_interleave(windows // q_global.shape[0], dim=0)
            q = q.reshape(windows, tokens, self.num_heads, -1).transpose(1, 2)
        else:
            q, k, v = split_qkv(self.qkv(x), self.num_heads)
        out = self.heads(q, k, v, bias=self.rel_pos.get_bias())
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(windows, tokens, channels)))


def pack(x: Tensor, query: Tensor) -> Tensor:
    """A map [B, H, W, C] and a global query [B, h, w, C] as one tensor [B, H·W + h·w, C]."""
    return torch.cat((x.flatten(1, 2), query.flatten(1, 2)), dim=1)


def unpack(packed: Tensor, grid: tuple[int, int], window: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """The map and the global query of :func:`pack`."""
    cut = grid[0] * grid[1]
    x, query = packed[:, :cut], packed[:, cut:]
    return x.unflatten(1, grid), query.unflatten(1, window)


class JoinedBlock(GlobalContextVitBlock):
    """A GC ViT block that takes and returns its map and the stage's global query as one tensor
    (:func:`pack`; ``grid``: the map's size), the query handed on unchanged."""

    grid: tuple[int, int]

    def forward(self, packed: Tensor) -> Tensor:
        x, query = unpack(packed, self.grid, self.window_size)
        return pack(super().forward(x, query), query)


class JoinedStage(GlobalContextVitStage):
    """A GC ViT stage whose blocks pass the map and the global query (of one window's size,
    ``window``) as one tensor."""

    window: tuple[int, int]

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        query = self.global_norm(self.global_block(x).permute(0, 2, 3, 1))
        packed = pack(x.permute(0, 2, 3, 1), query)
        for block in self.blocks:
            packed = block(packed)
        x, _ = unpack(packed, self.feat_size, self.window)
        return self.norm(x).permute(0, 3, 1, 2)


def joined(model: GlobalContextVit) -> GlobalContextVit:
    """The model itself, its stages and blocks made the joined ones, each block told its map's size
    (no new parameters: the keys stay the ANN's), before any block is left analog."""
    for stage in model.stages:
        stage.__class__, stage.window = JoinedStage, stage.blocks[0].window_size
        for block in stage.blocks:
            block.__class__, block.grid = JoinedBlock, stage.feat_size
    return model


register(WindowAttentionGlobal, Role.CONTAINER, twin=ExplicitGlobalWindowAttention)
# the stem's first convolution reads the image
register(GlobalContextVit, Role.INPUT, twin=joined, links=whole_network)
for cls in (
    ExplicitGlobalWindowAttention,
    JoinedBlock,
    JoinedStage,
    Downsample2d,
    FeatureBlock,
    MbConvBlock,
    Stem,
):
    register(cls, Role.CONTAINER)
