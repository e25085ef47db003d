"""Rules for timm's EfficientViM (Lee et al. 2025, "EfficientViM: Efficient Vision Mamba with
Hidden State Mixer based State Space Duality"; ``efficientvim_m1`` to ``m4`` and their ``_dist``
weights).

Each block's hidden-state mixer (HSM-SSD) projects the map to B, C and Δ (a 1×1 and a depthwise
convolution), weighs the tokens by a = softmax(Δ + A) over the tokens (A a parameter: a constant
shift), reduces the map to a hidden state h = x·(a ⊙ B)ᵀ [channels × state], mixes it there,
h' = out_proj(h ⊙ SiLU(z) + D·h) with (h, z) = hz_proj(h), and reads it back out, y = h'·C: four
products of two spiking operands (the twin makes them, and the softmax, modules). Around it,
depthwise convolutions, a channel LayerNorm and a convolutional FFN, each branch gated by a
constant σ(α); the stem and patch merging (with squeeze-and-excitation) are convolutions. The
classifier is a weighted sum of linear heads, by constant weights softmax(w), on the mean of
each stage's last hidden state (LayerNorm over its channels) and of the final map: one rate link
runs from the stem to the heads. timm's blocks return the map and the hidden state, and its
stages the map before and after merging and the hidden state; converted, each block and stage
returns what the model reads packed into one tensor, so that ``blocks=k`` (which counts every
stage's blocks in turn) can leave it analog.
"""

from __future__ import annotations

import torch
from timm.models.efficientvim import (
    FFN,
    HSMSSD,
    ConvLayer1d,
    ConvLayer2d,
    EfficientViM,
    EfficientViMBlock,
    EfficientViMStage,
    PatchMerging,
    Stem,
)
from torch import Tensor, nn

from ..sites import Product
from . import Link, Role, register
from .links import link_all
from .packing import pack, unpack


class ExplicitHSMSSD(nn.Module):
    """timm ``HSMSSD`` with its softmax and four products as modules: a = softmax(Δ + A) over
    the tokens, h = x·(a ⊙ B)ᵀ, (h, z) = hz_proj(h), h' = out_proj(h ⊙ SiLU(z) + D·h), y = h'·C;
    returns (y as a map, h'). Shares the original's children and parameters under their names."""

    def __init__(self, mixer: HSMSSD) -> None:
        super().__init__()
        self.BCdt_proj, self.dw, self.hz_proj, self.out_proj = (
            mixer.BCdt_proj,
            mixer.dw,
            mixer.hz_proj,
            mixer.out_proj,
        )
        self.A, self.D, self.act = mixer.A, mixer.D, mixer.act
        self.state_dim, self.d_inner = mixer.state_dim, mixer.d_inner
        self.softmax = nn.Softmax(dim=-1)
        # [B, state, tokens] operands have their state as channels; x and h [B, channels, ·] theirs
        self.weighting = Product("mul", channels_a=(-2,), channels_b=(-2,))
        self.state = Product("matmul", channels_a=(-2,), channels_b=(-1,))
        self.gating = Product("mul", channels_a=(-2,), channels_b=(-2,))
        self.readout = Product("matmul", channels_a=(-2,), channels_b=(-2,))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        batch, _, height, width = x.shape
        x = x.flatten(2)
        bcdt = self.dw(self.BCdt_proj(x).reshape(batch, -1, height, width)).flatten(2)
        b, c, dt = torch.split(bcdt, [self.state_dim] * 3, dim=1)
        a = self.softmax(dt + self.A.view(1, -1, 1))
        h = self.state(x, self.weighting(a, b).transpose(-2, -1))
        h, z = torch.split(self.hz_proj(h), [self.d_inner, self.d_inner], dim=1)
        h = self.out_proj(self.gating(h, self.act(z)) + h * self.D)
        return self.readout(h, c).reshape(batch, -1, height, width), h


class JoinedEfficientViMBlock(EfficientViMBlock):
    """timm ``EfficientViMBlock`` returning its map and hidden state packed into one tensor."""

    def forward(self, x: Tensor) -> Tensor:
        return pack(super().forward(x))


class JoinedEfficientViMStage(EfficientViMStage):
    """timm ``EfficientViMStage`` returning the hidden state of its last block and the map for the
    next stage (merged, where a merging follows), packed into one tensor in that order.
    ``hidden``: its blocks' hidden state's shape after the batch ([channels, state]), kept from the
    ANN, as a block left analog no longer shows it."""

    hidden: tuple[int, int]

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x, h = unpack(block(x), [x.shape[1:], self.hidden])
        return pack([h, x if self.downsample is None else self.downsample(x)])


class JoinedEfficientViM(EfficientViM):
    """timm ``EfficientViM`` whose stages return one packed tensor. ``hidden`` and ``merged``: each
    stage's hidden state's shape and merged map's channels (None without a merging), kept from the
    ANN, as a stage left analog no longer shows them."""

    hidden: list[tuple[int, int]]
    merged: list[int | None]

    def forward_features(self, x: Tensor) -> list[Tensor]:
        x = self.patch_embed(x)
        features = []
        for stage, norm, hidden, merged in zip(
            self.stages, self.norm, self.hidden, self.merged, strict=False
        ):
            # a merging's 3×3 convolution of stride 2 and padding 1 halves the map, rounding up
            size = x.shape[1:] if merged is None else (merged, (x.shape[2] + 1) // 2, (x.shape[3] + 1) // 2)
            h, x = unpack(stage(x), [hidden, size])
            features.append(norm(h.transpose(1, 2)).transpose(1, 2))
        features.append(self.norm[-1](x).flatten(2))
        return features


def joined(model: EfficientViM) -> JoinedEfficientViM:
    """The model itself, its class and its stages' and blocks' made the joined ones (no new
    parameters: the keys stay the ANN's)."""
    mixers = [stage.blocks[0].mixer for stage in model.stages]
    model.hidden = [(mixer.out_proj.conv.out_channels, mixer.state_dim) for mixer in mixers]
    model.merged = [
        None if s.downsample is None else s.downsample.dwconv2.conv.out_channels for s in model.stages
    ]
    model.__class__ = JoinedEfficientViM
    for stage, hidden in zip(model.stages, model.hidden, strict=True):
        stage.__class__, stage.hidden = JoinedEfficientViMStage, hidden
        for block in stage.blocks:
            block.__class__ = JoinedEfficientViMBlock
    return model


def _network_links(model: JoinedEfficientViM) -> list[Link]:
    """One link from the stem to the heads, whose outputs the model sums by constant weights; none
    without heads."""
    if any(isinstance(head, nn.Identity) for head in model.heads):
        return []
    return link_all(model, *(f"heads.{i}" for i in range(len(model.heads))))


def _blocks(model: EfficientViM) -> list[str]:
    """``blocks=k``'s blocks: every stage's blocks in turn."""
    return [
        f"stages.{s}.blocks.{b}" for s, stage in enumerate(model.stages) for b in range(len(stage.blocks))
    ]


register(HSMSSD, Role.CONTAINER, twin=ExplicitHSMSSD)
# the stem's first convolution reads the image; blocks=k reads the ANN
register(EfficientViM, Role.INPUT, twin=joined, blocks=_blocks)
register(JoinedEfficientViM, Role.INPUT, links=_network_links)
for cls in (
    ExplicitHSMSSD,
    JoinedEfficientViMBlock,
    JoinedEfficientViMStage,
    ConvLayer1d,
    ConvLayer2d,
    FFN,
    PatchMerging,
    Stem,
):
    register(cls, Role.CONTAINER)
