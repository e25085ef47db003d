"""Rules for timm's Hiera (Ryali et al. 2023, "Hiera: A Hierarchical Vision Transformer without
the Bells-and-Whistles"; Hiera-T to H, with or without absolute window position embeddings).

Hiera keeps its tokens unrolled (a fixed permutation, linear) so that pooling a stage's tokens is
a maximum over the first token dimension's strides. Its attention runs within mask units or
globally; where a stage begins, q is max-pooled over the stride, and the block's residual is
pooled the same way after its projection (or, without one, the max and the mean joined). timm
computes those maxima in forward; the twins make each one a module (:class:`StrideMax`, an EC
module). Everything else is a ViT's: LayerNorms and GELU as EC modules, position embeddings
(constants) added to the patch embedding, whose projection reads the image; the head's pool is a
mean, and one rate link runs from the patch embedding to the head's classifier.
"""

from __future__ import annotations

import torch
from timm.layers.classifier import ClNormMlpClassifierHead
from timm.models import hiera
from torch import Tensor, nn

from . import Role, register
from .links import whole_network
from .timm_twins import SoftmaxHeads


class StrideMax(nn.Module):
    """max over s of x viewed with dimension ``dim`` split as (s, N/s): Hiera's pooling of the
    unrolled tokens (Ryali et al. 2023, sec. 3), a max pool over each s-token neighborhood."""

    def __init__(self, stride: int, dim: int) -> None:
        super().__init__()
        self.stride, self.dim = stride, dim

    def forward(self, x: Tensor) -> Tensor:
        return x.unflatten(self.dim, (self.stride, -1)).amax(self.dim if self.dim >= 0 else self.dim - 1)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, dim={self.dim}"


class ExplicitMaskUnitAttention(SoftmaxHeads):
    """timm's ``MaskUnitAttention`` with the pooling of q, Q·Kᵀ, softmax and attn·V as modules.
    Within mask units q, k and v are laid out [B, windows, heads, tokens, head_dim] (timm: heads
    before windows), so that the heads' products see heads and head_dim as their channels.
    Shares the original's submodules under their names."""

    #: the original's names for its number of heads, their output width and q's stride
    names = ("heads", "dim_out", "q_stride")

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.num_heads, self.dim_out, self.q_stride = (getattr(attn, name) for name in self.names)
        self.window_size, self.use_mask_unit_attn = attn.window_size, attn.use_mask_unit_attn
        self.qkv, self.proj = attn.qkv, attn.proj
        self.q_pool = StrideMax(self.q_stride, -2) if self.q_stride > 1 else nn.Identity()
        self._init_heads(attn)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, _ = x.shape
        if self.use_mask_unit_attn:
            windows = tokens // (self.q_stride * self.window_size)
            qkv = self.qkv(x).reshape(batch, -1, windows, 3, self.num_heads, self.dim_out // self.num_heads)
            q, k, v = qkv.permute(3, 0, 2, 4, 1, 5).unbind(0)  # [B, windows, heads, tokens, d]
            out = self.heads(self.q_pool(q), k, v).permute(0, 3, 1, 2, 4)  # [B, tokens, windows, heads, d]
        else:
            qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, heads, tokens, d]
            out = self.heads(self.q_pool(q), k, v).transpose(1, 2)
        return self.proj(out.reshape(batch, -1, self.dim_out))


class ExplicitHieraBlock(nn.Module):
    """timm's ``HieraBlock`` with the pooling of its residual a module: after the projection, or,
    without one, the max and the mean of the strides joined. Shares the original's submodules under
    their names."""

    def __init__(self, block: hiera.HieraBlock) -> None:
        super().__init__()
        self.do_expand, self.stride = block.do_expand, block.attn.q_stride
        self.norm1, self.proj, self.attn = block.norm1, block.proj, block.attn
        # a stage that widens without pooling (stride 1) takes the maximum of one: no module
        self.pool = StrideMax(self.stride, 1) if block.do_expand and self.stride > 1 else nn.Identity()
        self.ls1, self.drop_path1 = block.ls1, block.drop_path1
        self.norm2, self.mlp, self.ls2, self.drop_path2 = block.norm2, block.mlp, block.ls2, block.drop_path2

    def forward(self, x: Tensor) -> Tensor:
        x_norm = self.norm1(x)
        if self.do_expand and self.proj is not None:
            x = self.pool(self.proj(x_norm))
        elif self.do_expand:
            x = torch.cat([self.pool(x), x.unflatten(1, (self.stride, -1)).mean(dim=1)], dim=-1)
        x = x + self.drop_path1(self.ls1(self.attn(x_norm)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


def _linear_pool(head: ClNormMlpClassifierHead) -> str | None:
    """Why the head cannot convert: a max pool, which timm computes in forward."""
    if head.pool_type in ("max", "avgmax"):
        return f"its {head.pool_type!r} pool is computed in forward; use global_pool='avg'"
    return None


register(hiera.MaskUnitAttention, Role.CONTAINER, twin=ExplicitMaskUnitAttention)
register(hiera.HieraBlock, Role.CONTAINER, twin=ExplicitHieraBlock)
register(StrideMax, Role.NONLINEAR)
register(hiera.Hiera, Role.CONTAINER, links=whole_network)
register(hiera.PatchEmbed, Role.INPUT)  # its projection reads the image
register(ClNormMlpClassifierHead, Role.CONTAINER, check=_linear_pool)
for cls in (ExplicitMaskUnitAttention, ExplicitHieraBlock, hiera.Unroll, hiera.Reroll):
    register(cls, Role.CONTAINER)
