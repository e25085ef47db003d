"""Rules for torchvision's Swin Transformer (``torchvision.models.SwinTransformer``): Swin-T, S, B
with V1 blocks and Swin V2-T, S, B (``swin_v2_t``...) with V2 blocks.

Its window attention is one function (``shifted_window_attention``) that pads, shifts and
partitions the tokens, attends within each window with a relative position bias and the shifted
windows' mask, and reverses it all. Padding, shifting, partitioning and their reverses are
linear, and the bias and the mask are constants added to the scores, so an explicit twin computes
the same with Q·Kᵀ, softmax and attn·V as modules. Patch merging, the blocks' residual sums,
``Permute``, average pooling and stochastic depth (in evaluation) are linear; the stem's
convolution sees the image at every step. V2 blocks attend by cosine (the normalizations of q
and k become EC modules; τ and the cpb MLP's bias are constants, as in :mod:`.timm_swinv2`) and
normalize after the attention, the MLP and patch merging's reduction; one rate link over the whole
network covers both orders. ``blocks=k`` counts the Swin blocks stage by stage, as for timm's Swin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.swin_transformer import (
    PatchMerging,
    PatchMergingV2,
    ShiftedWindowAttention,
    ShiftedWindowAttentionV2,
    SwinTransformer,
    SwinTransformerBlock,
    SwinTransformerBlockV2,
    _get_relative_position_bias,
)
from torchvision.ops import StochasticDepth
from torchvision.ops.misc import MLP, Permute

from . import Role, register
from .links import to_head
from .timm_swin import with_mask
from .timm_swinv2 import ConstantMlp, continuous_bias, temperature
from .timm_twins import L2Normalize, SoftmaxHeads, split_qkv


def shift_mask(height: int, width: int, window: list[int], shift: list[int], like: Tensor) -> Tensor:
    """The mask of shifted windows on a padded [height, width] grid, [windows, tokens, tokens]:
    -100 between tokens that the cyclic shift brought from different regions, 0 within one (Liu
    et al. 2021; torchvision labels the regions by the slices [0, -window), [-window, -shift),
    [-shift, end) along each axis)."""
    rows, cols = (
        (torch.arange(size, device=like.device) >= size - w).long()
        + (torch.arange(size, device=like.device) >= size - s).long()
        for size, w, s in ((height, window[0], shift[0]), (width, window[1], shift[1]))
    )
    region = rows[:, None] * 3 + cols[None, :]
    region = region.view(height // window[0], window[0], width // window[1], window[1])
    region = region.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])
    different = region.unsqueeze(1) != region.unsqueeze(2)
    return torch.zeros(different.shape, dtype=like.dtype, device=like.device).masked_fill(different, -100.0)


class ExplicitShiftedWindowAttention(SoftmaxHeads):
    """torchvision's ``ShiftedWindowAttention`` with Q·Kᵀ, softmax and attn·V as modules. Shares
    the original's qkv, proj, relative position bias table and index under their names."""

    def __init__(self, attn: ShiftedWindowAttention) -> None:
        super().__init__()
        self.window_size, self.shift_size, self.num_heads = attn.window_size, attn.shift_size, attn.num_heads
        self.qkv, self.proj = attn.qkv, attn.proj
        self.register_buffer("relative_position_index", attn.relative_position_index)
        self._init_scores(attn)

    def _init_scores(self, attn: ShiftedWindowAttention) -> None:
        """Scaled dot products plus a learned bias table."""
        self.relative_position_bias_table = attn.relative_position_bias_table
        self._init_heads(attn, scale=(attn.qkv.in_features // attn.num_heads) ** -0.5)

    def project(self, windows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v per head from the windows' tokens."""
        return split_qkv(self.qkv(windows), self.num_heads)

    def position_bias(self) -> Tensor:
        """The relative position bias, [1, heads, tokens, tokens]: a constant."""
        table, index = self.relative_position_bias_table, self.relative_position_index
        return _get_relative_position_bias(table, index, self.window_size)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, H, W, C] -> [B, H, W, C]."""
        batch, height, width, channels = x.shape
        window = self.window_size
        x = F.pad(x, (0, 0, 0, (-width) % window[1], 0, (-height) % window[0]))
        _, padded_h, padded_w, _ = x.shape
        # no shift where one window covers the whole axis
        sizes = (padded_h, padded_w)
        shift = [0 if w >= size else s for w, s, size in zip(window, self.shift_size, sizes, strict=True)]
        shifted = sum(shift) > 0
        if shifted:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        grid = (padded_h // window[0], padded_w // window[1])
        windows = x.view(batch, grid[0], window[0], grid[1], window[1], channels).permute(0, 1, 3, 2, 4, 5)
        windows = windows.reshape(-1, window[0] * window[1], channels)
        mask = shift_mask(padded_h, padded_w, window, shift, x) if shifted else None
        bias = with_mask(self.position_bias(), mask, windows.shape[0])
        out = self.heads(*self.project(windows), bias).transpose(1, 2)
        out = self.proj(out.reshape(windows.shape)).view(batch, *grid, *window, channels)
        out = out.permute(0, 1, 3, 2, 4, 5).reshape(batch, padded_h, padded_w, channels)
        if shifted:
            out = torch.roll(out, shifts=(shift[0], shift[1]), dims=(1, 2))
        return out[:, :height, :width, :].contiguous()


class ExplicitShiftedWindowAttentionV2(ExplicitShiftedWindowAttention):
    """torchvision's ``ShiftedWindowAttentionV2``: cosine attention, τ·Q̂·K̂ᵀ with Q̂ and K̂ normalized
    per token by EC modules, plus the cpb MLP's continuous bias. Shares the original's parameters
    and buffers under their names."""

    def _init_scores(self, attn: ShiftedWindowAttentionV2) -> None:
        if attn.qkv.bias is not None:  # torchvision drops k's bias in its forward pass, whatever it holds
            with torch.no_grad():
                attn.qkv.bias[attn.qkv.in_features : 2 * attn.qkv.in_features] = 0  # the network's copy
        self.logit_scale = attn.logit_scale
        attn.cpb_mlp.__class__ = ConstantMlp  # the same children: the keys stay the ANN's
        self.cpb_mlp = attn.cpb_mlp
        self.register_buffer("relative_coords_table", attn.relative_coords_table)
        self._init_heads(attn, scale=1.0)  # τ multiplies Q̂ instead
        self.q_norm, self.k_norm = L2Normalize(), L2Normalize()

    def project(self, windows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = super().project(windows)
        return self.q_norm(q) * temperature(self.logit_scale), self.k_norm(k), v

    def position_bias(self) -> Tensor:
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        index = self.relative_position_index
        return continuous_bias(_get_relative_position_bias(table, index, self.window_size))


def _blocks(swin: SwinTransformer) -> list[str]:
    """The Swin blocks (V1 or V2) in forward order, stage by stage: the children of ``features``
    that hold them (patch merging and the stem in between)."""
    return [path for path, module in swin.named_modules() if isinstance(module, SwinTransformerBlock)]


register(ShiftedWindowAttention, Role.CONTAINER, twin=ExplicitShiftedWindowAttention)
register(ShiftedWindowAttentionV2, Role.CONTAINER, twin=ExplicitShiftedWindowAttentionV2)
# the stem's convolution reads the image
register(SwinTransformer, Role.INPUT, links=to_head, blocks=_blocks)  # one link, stem to head
for cls in (
    ExplicitShiftedWindowAttention,
    ExplicitShiftedWindowAttentionV2,
    SwinTransformerBlock,
    SwinTransformerBlockV2,
    PatchMerging,
    PatchMergingV2,
    MLP,
):
    register(cls, Role.CONTAINER)
for cls in (Permute, StochasticDepth):
    register(cls, Role.PASSTHROUGH)
