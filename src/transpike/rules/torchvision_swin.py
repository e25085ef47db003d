"""Rules for torchvision's Swin Transformer (``torchvision.models.SwinTransformer`` with V1 blocks:
Swin-T, Swin-S, Swin-B).

Its window attention is one function (``shifted_window_attention``) that pads, shifts and
partitions the tokens, attends within each window with a relative position bias and the shifted
windows' mask, and reverses it all. Padding, shifting, partitioning and their reverses are
linear, and the bias and the mask are constants added to the scores, so an explicit twin computes
the same with Q·Kᵀ, softmax and attn·V as modules. Patch merging, the blocks' residual sums,
``Permute``, average pooling and stochastic depth (in evaluation) are linear; the stem's
convolution sees the image at every step. Swin V2's blocks (``swin_v2_t``) are refused by name.
``blocks=k`` counts the Swin blocks stage by stage, as for timm's Swin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.swin_transformer import (
    PatchMerging,
    ShiftedWindowAttention,
    SwinTransformer,
    SwinTransformerBlock,
    _get_relative_position_bias,
)
from torchvision.ops import StochasticDepth
from torchvision.ops.misc import MLP, Permute

from . import Link, Role, register
from .links import link_all
from .timm_swin import with_mask
from .timm_twins import SoftmaxHeads, split_qkv


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
        self.relative_position_bias_table = attn.relative_position_bias_table
        self.register_buffer("relative_position_index", attn.relative_position_index)
        self._init_heads(attn, scale=(attn.qkv.in_features // attn.num_heads) ** -0.5)

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
        table, index = self.relative_position_bias_table, self.relative_position_index
        bias = with_mask(
            _get_relative_position_bias(table, index, window),
            shift_mask(padded_h, padded_w, window, shift, x) if shifted else None,
            windows.shape[0],
        )
        out = self.heads(*split_qkv(self.qkv(windows), self.num_heads), bias).transpose(1, 2)
        out = self.proj(out.reshape(windows.shape)).view(batch, *grid, *window, channels)
        out = out.permute(0, 1, 3, 2, 4, 5).reshape(batch, padded_h, padded_w, channels)
        if shifted:
            out = torch.roll(out, shifts=(shift[0], shift[1]), dims=(1, 2))
        return out[:, :height, :width, :].contiguous()


def _network_links(swin: SwinTransformer) -> list[Link]:
    """One link from the stem to the head, which emits the increments the simulation averages."""
    return link_all(swin, "head")


register(ShiftedWindowAttention, Role.CONTAINER, twin=ExplicitShiftedWindowAttention)
def _blocks(swin: SwinTransformer) -> list[str]:
    """The Swin blocks in forward order, stage by stage: the children of ``features`` that hold
    them (patch merging and the stem in between)."""
    return [path for path, module in swin.named_modules() if isinstance(module, SwinTransformerBlock)]


# the stem's convolution reads the image
register(SwinTransformer, Role.INPUT, links=_network_links, blocks=_blocks)
for cls in (ExplicitShiftedWindowAttention, SwinTransformerBlock, PatchMerging, MLP):
    register(cls, Role.CONTAINER)
for cls in (Permute, StochasticDepth):
    register(cls, Role.PASSTHROUGH)
