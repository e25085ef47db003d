"""Rules for timm's Swin Transformer V2 (``SwinTransformerV2``: SwinV2-T/S/B/L at every window size).

Swin V2 keeps Swin's windows, shifts, padding and patch merging (:mod:`.timm_swin`, all linear)
and changes three things:

- cosine attention: the scores are τ_h · Q̂·K̂ᵀ, where Q̂ and K̂ are q and k normalized to unit L2
  norm per token, nonlinear in each operand, so each normalization becomes an EC module before the
  product's MT neurons; τ_h = exp(min(logit_scale_h, ln 100)) is a constant per head;
- a continuous relative position bias, 16·σ(MLP(log-spaced coordinates)): computed from parameters
  and buffers alone, a constant added to the scores; its MLP is a constant module, not converted;
- residual post-norm: a block's norms read its attention's and its MLP's outputs and write the
  residual stream, which its qkv and fc1 read; patch merging normalizes after its reduction.
"""

from __future__ import annotations

import math

import torch
from timm.models.swin_transformer_v2 import (
    PatchMerging,
    SwinTransformerV2,
    SwinTransformerV2Block,
    SwinTransformerV2Stage,
    WindowAttention,
)
from torch import Tensor, nn

from . import Link, Role, register
from .timm_swin import StreamEnds, head_links, stage_streams, with_mask
from .timm_twins import L2Normalize, SoftmaxHeads, packed_qkv
from .timm_vit import attention_links


def temperature(logit_scale: Tensor) -> Tensor:
    """Cosine attention's τ = exp(min(logit_scale, ln 100)) per head (Liu et al. 2022, Swin V2
    eq. 2; timm and torchvision clamp at 100): computed from a parameter, a constant."""
    return torch.clamp(logit_scale, max=math.log(100)).exp()


def continuous_bias(mlp_output: Tensor) -> Tensor:
    """Swin V2's log-spaced continuous position bias, 16·σ(B̂), from the cpb MLP's output B̂
    gathered per pair of tokens (Liu et al. 2022, eq. 4; the bound 16 is both codes')."""
    return 16 * torch.sigmoid(mlp_output)


def position_bias(mlp: nn.Module, coordinates: Tensor, index: Tensor, heads: int) -> Tensor:
    """Swin V2's continuous bias 16·σ(mlp(coordinates)) gathered for each pair of a window's
    tokens by their relative position ``index`` ([tokens, tokens]): [heads, tokens, tokens]."""
    table = mlp(coordinates).view(-1, heads)
    return continuous_bias(table[index.view(-1)].view(*index.shape, heads).permute(2, 0, 1))


class ConstantMlp(nn.Sequential):
    """Swin V2's position-bias MLP (``cpb_mlp``), which reads a constant coordinate table: what it
    computes is the same at every step, so it stays as it is (:attr:`Role.CONSTANT`)."""


class ExplicitCosineWindowAttention(SoftmaxHeads):
    """timm's Swin V2 ``WindowAttention`` with the normalizations of q and k, Q̂·K̂ᵀ, softmax and
    attn·V as modules. Shares the original's parameters and buffers under their names."""

    def __init__(self, attn: WindowAttention) -> None:
        super().__init__()
        self.num_heads, self.window_size = attn.num_heads, attn.window_size
        self.qkv, self.q_bias, self.v_bias = attn.qkv, attn.q_bias, attn.v_bias
        self.register_buffer("k_bias", attn.k_bias, persistent=False)  # zeros in timm
        self.logit_scale = attn.logit_scale
        attn.cpb_mlp.__class__ = ConstantMlp  # the same children: the keys stay the ANN's
        self.cpb_mlp = attn.cpb_mlp
        self.register_buffer("relative_coords_table", attn.relative_coords_table, persistent=False)
        self.register_buffer("relative_position_index", attn.relative_position_index, persistent=False)
        self._init_heads(attn)  # scale 1: τ multiplies Q̂ instead
        self.q_norm, self.k_norm = L2Normalize(), L2Normalize()
        self.norm, self.gate = nn.Identity(), None  # as ExplicitAttention has them, for its links
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def _position_bias(self) -> Tensor:
        return position_bias(
            self.cpb_mlp, self.relative_coords_table, self.relative_position_index, self.num_heads
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: [windows·B, tokens, C]; mask: [windows, tokens, tokens] (0 or -100) or None."""
        batch, tokens, _ = x.shape
        q, k, v = packed_qkv(self, x)
        q, k = self.q_norm(q) * temperature(self.logit_scale), self.k_norm(k)
        out = self.heads(q, k, v, with_mask(self._position_bias(), mask, batch))
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, tokens, -1)))


def _block_links(block: SwinTransformerV2Block) -> list[Link]:
    """SwinTransformerV2Block.forward: the attention's projection feeds only norm1 (through the
    window reverse and the shift), the MLP's fc2 only norm2."""
    return [("attn.proj", ("norm1",)), ("mlp.fc2", ("norm2",))]


def _merging_links(merging: PatchMerging) -> list[Link]:
    """PatchMerging.forward (Swin V2): padding and the 2×2 regrouping, the reduction, the norm."""
    return [("reduction", ("norm",))]


#: post-norm Swin V2: the blocks' norms write, their qkv and fc1 read; patch merging reduces, then
#: normalizes
POST_NORM = StreamEnds(PatchMerging, ("norm1", "norm2"), ("attn.qkv", "mlp.fc1"), "norm", "reduction")


def _model_links(swin: SwinTransformerV2) -> list[Link]:
    return stage_streams(swin, POST_NORM) + head_links(swin)


register(WindowAttention, Role.CONTAINER, twin=ExplicitCosineWindowAttention)
register(ExplicitCosineWindowAttention, Role.CONTAINER, links=attention_links)
register(ConstantMlp, Role.CONSTANT)
register(SwinTransformerV2Block, Role.CONTAINER, links=_block_links)
register(PatchMerging, Role.CONTAINER, links=_merging_links)
register(SwinTransformerV2Stage, Role.CONTAINER)
register(SwinTransformerV2, Role.CONTAINER, links=_model_links)
