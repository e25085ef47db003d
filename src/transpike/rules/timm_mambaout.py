"""Rules for timm's MambaOut (Yu and Wang 2025, "MambaOut: Do We Really Need Mamba for Vision?";
``mambaout_femto`` to ``base``, the ``_plus`` and ``_wide`` models): MetaFormer stages of gated
CNN blocks, Mamba's block without its state-space model.

A gated CNN block (Dauphin et al. 2017) normalizes channels-last tokens, expands them by one
Linear into a gate g, an identity part i and a part c that a depthwise convolution mixes over the
map, and projects act(g) ⊙ [i, conv(c)] back, a product of two spiking operands with its EC (the
twin). The stem's and downsamplers' convolutions and LayerNorms, and the MLP head (pool, norm,
Linear, GELU, norm, Linear), convert as elsewhere; the stem's first convolution reads the image,
and one rate link runs from it to the head's classifier.
"""

from __future__ import annotations

import torch
from timm.models.mambaout import (
    Downsample,
    DownsampleNormFirst,
    GatedConvBlock,
    MambaOut,
    MambaOutStage,
    MlpHead,
    Stem,
)
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import whole_network


class ExplicitGatedConvBlock(nn.Module):
    """MambaOut's ``GatedConvBlock`` with its gating product as a module:
    x + ls(fc2(act(g) ⊙ [i, conv(c)])), (g, i, c) = fc1(norm(x)) split. Shares the original's
    children under their names."""

    def __init__(self, block: GatedConvBlock) -> None:
        super().__init__()
        self.norm, self.fc1, self.act, self.conv = block.norm, block.fc1, block.act, block.conv
        self.fc2, self.ls, self.drop_path = block.fc2, block.ls, block.drop_path
        self.split_indices = block.split_indices
        self.gating = Product("mul", channels_a=(-1,), channels_b=(-1,))

    def forward(self, x: Tensor) -> Tensor:
        g, i, c = torch.split(self.fc1(self.norm(x)), self.split_indices, dim=-1)
        c = self.conv(c.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.drop_path(self.ls(self.fc2(self.gating(self.act(g), torch.cat((i, c), dim=-1)))))


register(GatedConvBlock, Role.CONTAINER, twin=ExplicitGatedConvBlock)
# the stem's first convolution reads the image
register(MambaOut, Role.INPUT, links=whole_network)
for cls in (ExplicitGatedConvBlock, MambaOutStage, Stem, Downsample, DownsampleNormFirst, MlpHead):
    register(cls, Role.CONTAINER)
