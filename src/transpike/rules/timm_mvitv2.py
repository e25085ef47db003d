"""Rules for timm's MViTv2 (``MultiScaleVit``: MViTv2-T to H, with or without a class token; Li et
al. 2022, "MViTv2: Improved Multiscale Vision Transformers for Classification and Detection").

MViTv2 attends with pooling attention: q, k and v from one Linear, each pooled on the token map
(a strided depthwise convolution per head, a weight layer with its MT neuron, or an average or max
pool) and layer-normed (EC modules), the class token kept out of the pooling. The scores get a
decomposed relative position term, each query's product with learned per-offset embeddings along
height and along width: linear in q (float work, charged in the full energy form). The attention
output adds the pooled q (residual pooling); where a block downsamples, its shortcut is max-pooled
(an EC module) and, where it widens, projected by a Linear. timm hands each block and stage the
token map's size along with the tokens and takes it back; the converted copy hands it the size as
a constant and takes back only the tokens (each stage knows its output size), so that
``blocks=k`` can leave any block or stage analog. The patch embedding's convolution reads the
image; one rate link runs from it to the head's classifier. ``blocks=k`` counts the blocks stage
by stage.
"""

from __future__ import annotations

import torch
from timm.models.mvitv2 import (
    MultiScaleAttention,
    MultiScaleBlock,
    MultiScaleVit,
    MultiScaleVitStage,
    PatchEmbed,
    cal_rel_pos_type,
    reshape_post_pool,
    reshape_pre_pool,
)
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import whole_network


class ExplicitPoolingAttention(nn.Module):
    """timm ``MultiScaleAttention`` with Q·Kᵀ, softmax and attn·V as modules (products of two
    spiking operands with their EC); the pooling, norms and relative position term as timm
    computes them. Shares the original's submodules and parameters under their names."""

    def __init__(self, attn: MultiScaleAttention) -> None:
        super().__init__()
        self.num_heads, self.dim_out, self.has_cls_token = attn.num_heads, attn.dim_out, attn.has_cls_token
        self.qkv, self.proj = attn.qkv, attn.proj
        for name in ("pool_q", "pool_k", "pool_v", "norm_q", "norm_k", "norm_v"):
            setattr(self, name, getattr(attn, name))
        self.rel_pos_type, self.residual_pooling = attn.rel_pos_type, attn.residual_pooling
        if self.rel_pos_type == "spatial":
            self.rel_pos_h, self.rel_pos_w = attn.rel_pos_h, attn.rel_pos_w
        # Operands are [B, heads, tokens, head_dim] (q, v), [B, heads, head_dim, tokens] (kᵀ) and
        # [B, heads, tokens, tokens] (attn); per-channel thresholds are per (head, head_dim) or per head.
        self.qk = Product("matmul", attn.scale, channels_a=(-3, -1), channels_b=(-3, -2))
        self.softmax = nn.Softmax(dim=-1)
        self.av = Product("matmul", 1.0, channels_a=(-3,), channels_b=(-3, -1))

    def _pooled(self, x: Tensor, pool: nn.Module | None, norm: nn.Module | None, size) -> tuple[Tensor, list]:
        """One of q, k, v pooled on the token map (the class token aside) and normed."""
        if pool is not None:
            x, token = reshape_pre_pool(x, size, self.has_cls_token)
            x, size = reshape_post_pool(pool(x), self.num_heads, token)
        return (norm(x) if norm is not None else x), size

    def forward(self, x: Tensor, feat_size: list[int]) -> tuple[Tensor, list[int]]:
        batch, tokens, _ = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, q_size = self._pooled(q, self.pool_q, self.norm_q, feat_size)
        k, k_size = self._pooled(k, self.pool_k, self.norm_k, feat_size)
        v, _ = self._pooled(v, self.pool_v, self.norm_v, feat_size)
        scores = self.qk(q, k.transpose(-2, -1))
        if (
            self.rel_pos_type == "spatial"
        ):  # timm's term, linear in q, added to zeros: the scores stay as they are
            position = cal_rel_pos_type(
                scores.new_zeros(scores.shape),
                q,
                self.has_cls_token,
                q_size,
                k_size,
                self.rel_pos_h,
                self.rel_pos_w,
            )
            scores = scores + position
        out = self.av(self.softmax(scores), v)
        if self.residual_pooling:
            out = out + q
        return self.proj(out.transpose(1, 2).reshape(batch, -1, self.dim_out)), q_size


class JoinedBlock(MultiScaleBlock):
    """A MViTv2 block that takes the token map's size as a constant and returns only the tokens."""

    def forward(self, x: Tensor, feat_size: list[int]) -> Tensor:
        return super().forward(x, feat_size)[0]


class JoinedStage(MultiScaleVitStage):
    """A MViTv2 stage of :class:`JoinedBlock`: only its first block may pool the map, to the
    stage's ``feat_size``, which every later block gets."""

    def forward(self, x: Tensor, feat_size: list[int]) -> Tensor:
        for block in self.blocks:
            x, feat_size = block(x, feat_size), self.feat_size
        return x


class JoinedMultiScaleVit(MultiScaleVit):
    """timm ``MultiScaleVit`` whose stages return only the tokens (:class:`JoinedStage`); it knows
    the size of the map each stage makes (``stage_sizes``)."""

    stage_sizes: list[tuple[int, int]]

    def forward_features(self, x: Tensor) -> Tensor:
        x, feat_size = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for stage, size in zip(self.stages, self.stage_sizes, strict=True):
            x, feat_size = stage(x, feat_size), size
        return self.norm(x)


def joined(model: MultiScaleVit) -> JoinedMultiScaleVit:
    """The model itself, its class, its stages' and its blocks' made the joined ones (no new
    parameters: the keys stay the ANN's), before any block is left analog."""
    model.__class__, model.stage_sizes = JoinedMultiScaleVit, [stage.feat_size for stage in model.stages]
    for stage in model.stages:
        stage.__class__ = JoinedStage
        for block in stage.blocks:
            block.__class__ = JoinedBlock
    return model


def _block_paths(model: MultiScaleVit) -> list[str]:
    """Each stage's blocks in turn."""
    return [
        f"stages.{s}.blocks.{b}" for s, stage in enumerate(model.stages) for b in range(len(stage.blocks))
    ]


register(MultiScaleAttention, Role.CONTAINER, twin=ExplicitPoolingAttention)
register(MultiScaleVit, Role.CONTAINER, twin=joined, blocks=_block_paths)
register(JoinedMultiScaleVit, Role.CONTAINER, links=whole_network, blocks=_block_paths)
register(PatchEmbed, Role.INPUT)  # its convolution reads the image
for cls in (ExplicitPoolingAttention, JoinedBlock, JoinedStage):
    register(cls, Role.CONTAINER)
