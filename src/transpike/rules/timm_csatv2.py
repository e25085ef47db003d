"""Rules for timm's CSATv2 (``csatv2``, ``csatv2_21m``): a hybrid that reads images in the DCT
domain.

Its stem takes the image to YCbCr, cuts it into 8 × 8 blocks, applies the 2-D DCT (a fixed
Linear on each block's rows and columns), normalizes the coefficients by fixed statistics and
projects each color channel's 64 coefficients by a 1×1 convolution: all of it linear in the
image, so the stem is the input and its three convolutions read it (direct coding). The stages
are ConvNeXt blocks (depthwise convolution, LayerNorm, Linear, GELU, global response norm, Linear)
whose output is multiplied by a spatial attention map, then ViT blocks with a convolutional
position encoding (those opening a stage max-pool their input, and project the shortcut). The
map: the channels' mean and max (:class:`ChannelMax`, an EC module), pooled to 7 × 7, a
convolution, and a one-channel Transformer block, upsampled bilinearly; the product with the
block's output is a product of two spiking operands with its EC (the twin).

That Transformer block normalizes each token's single channel by LayerNorm, which returns its bias
whatever the input (x minus its mean is 0), and so does the norm before its MLP: both branches
are constants and the block is x + c, its twin computes it so, c a ``constant``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers.grn import GlobalResponseNorm
from timm.models.csatv2 import (
    Block,
    CSATv2,
    Dct1d,
    Dct2d,
    LearnableDct2d,
    PosConv,
    SpatialAttention,
    SpatialTransformerBlock,
    TransformerBlock,
)
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import whole_network


class ChannelMax(nn.Module):
    """The largest channel at each pixel, max_c x[:, c], as a [B, 1, H, W] map."""

    def forward(self, x: Tensor) -> Tensor:
        return x.amax(dim=1, keepdim=True)


class ExplicitSpatialAttention(nn.Module):
    """CSATv2's ``SpatialAttention`` with the channel max as a module: the map
    attn(conv(pool([mean_c x, max_c x]))). Shares the original's children under their names."""

    def __init__(self, attention: SpatialAttention) -> None:
        super().__init__()
        self.channel_max = ChannelMax()
        self.avgpool, self.conv, self.attn = attention.avgpool, attention.conv, attention.attn

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([x.mean(dim=1, keepdim=True), self.channel_max(x)], dim=1)
        return self.attn(self.conv(self.avgpool(x)))


class ExplicitCsatBlock(nn.Module):
    """CSATv2's ConvNeXt ``Block`` with its product with the attention map as a module:
    x + ls(y ⊙ up(attn(y))), y = pwconv2(grn(act(pwconv1(norm(dwconv(x)))))) and ``up`` the
    bilinear upsampling of the 7 × 7 map (linear). Shares the original's children under their
    names."""

    def __init__(self, block: Block) -> None:
        super().__init__()
        self.dwconv, self.norm, self.pwconv1, self.act = block.dwconv, block.norm, block.pwconv1, block.act
        self.grn, self.pwconv2, self.ls, self.drop_path = block.grn, block.pwconv2, block.ls, block.drop_path
        self.attn = block.attn
        self.gating = Product("mul", channels_a=(-3,), channels_b=(-3,))

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y))))).permute(0, 3, 1, 2)
        attn = F.interpolate(self.attn(y), size=y.shape[2:], mode="bilinear", align_corners=True)
        return x + self.drop_path(self.ls(self.gating(y, attn)))


class SpatialBranches(SpatialTransformerBlock):
    """The two branches of CSATv2's one-channel ``SpatialTransformerBlock``, c = block(0): each
    starts with a LayerNorm over one channel, which returns its bias whatever the input, so c is
    the same for every input (a ``constant``)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(torch.zeros_like(x))


class OffsetSpatialBlock(nn.Module):
    """CSATv2's ``SpatialTransformerBlock`` as what it computes: x + c, with c its branches
    (:class:`SpatialBranches`). :attr:`ann_keys` maps the branches' keys back to the block's."""

    def __init__(self, block: SpatialTransformerBlock) -> None:
        super().__init__()
        self.ann_keys = {f"branches.{key}": key for key in block.state_dict()}
        block.__class__ = SpatialBranches
        self.branches = block

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branches(x)


def _block_paths(model: CSATv2) -> list[str]:
    """The ConvNeXt and Transformer blocks of every stage in turn (not the downsampling
    convolutions and LayerNorms between them)."""
    return [
        f"stages.{s}.{b}"
        for s, stage in enumerate(model.stages)
        for b, module in enumerate(stage)
        if isinstance(module, (Block, ExplicitCsatBlock, TransformerBlock))
    ]


register(CSATv2, Role.CONTAINER, links=whole_network, blocks=_block_paths)
# the stem's three convolutions read the DCT coefficients of the image
register(LearnableDct2d, Role.INPUT, inputs=lambda stem: ["conv_y", "conv_cb", "conv_cr"])
for cls in (Dct1d, Dct2d):
    register(cls, Role.PASSTHROUGH)  # a fixed Linear on the blocks' rows and columns
register(Block, Role.CONTAINER, twin=ExplicitCsatBlock)
register(SpatialAttention, Role.CONTAINER, twin=ExplicitSpatialAttention)
for cls in (ExplicitCsatBlock, ExplicitSpatialAttention, TransformerBlock, PosConv):
    register(cls, Role.CONTAINER)
register(SpatialTransformerBlock, Role.CONTAINER, twin=OffsetSpatialBlock)
register(OffsetSpatialBlock, Role.CONTAINER)
register(SpatialBranches, Role.CONSTANT)
register(ChannelMax, Role.NONLINEAR)
register(GlobalResponseNorm, Role.NONLINEAR)
