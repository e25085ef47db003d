"""Rules for timm's CoaT-Lite (``CoaT`` with serial blocks only: CoaT-Lite Tiny to Medium; Xu et
al. 2021, "Co-Scale Conv-Attentional Image Transformers").

Four stages, each a patch embedding and serial blocks. A serial block adds a convolutional
position encoding (a depthwise convolution of the patch tokens added to them: linear) and runs
factorized attention: softmax(K) over the tokens, then Q·(softmax(K)ᵀ·V), both products of two
spiking operands, plus a convolutional relative position encoding Q ⊙ conv(V) (depthwise
convolutions of V per group of heads: another product of two spiking operands). The stage's blocks
share one position encoding and one relative position encoding in timm; converted, each block
gets its own copy (their state is per call; the values and keys are the ANN's). Only the first
patch embedding reads the image; the class tokens are constants and the rest is token
selection, so one rate link runs from the first patch embedding to the head. ``blocks=k`` counts
the serial blocks stage by stage. CoaT's parallel blocks (CoaT Tiny to Small) are refused: the
model runs one position encoding per stage in every one of them, whose state would be shared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.coat import (
    CoaT,
    ConvPosEnc,
    ConvRelPosEnc,
    FactorAttnConvRelPosEnc,
    ParallelBlock,
    SerialBlock,
)
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import to_head
from .timm_cait import chained_blocks
from .timm_twins import split_qkv


class ExplicitConvRelPosEnc(nn.Module):
    """timm ``ConvRelPosEnc``: Q ⊙ conv(V) on the patch tokens (zero on the class token's row),
    conv a depthwise convolution per group of heads, with the product a module. Shares the
    original's convolutions under their names."""

    def __init__(self, crpe: ConvRelPosEnc) -> None:
        super().__init__()
        self.conv_list, self.channel_splits = crpe.conv_list, crpe.channel_splits
        self.gating = Product("mul", 1.0, channels_a=(-3, -1), channels_b=(-3, -1))

    def forward(self, q: Tensor, v: Tensor, size: tuple[int, int]) -> Tensor:
        """q, v: [B, heads, 1 + H·W, head_dim] -> the same."""
        batch, heads, _, width = q.shape
        image = v[:, :, 1:].transpose(-1, -2).reshape(batch, heads * width, *size)
        parts = image.split(self.channel_splits, dim=1)
        convolved = torch.cat([conv(part) for conv, part in zip(self.conv_list, parts, strict=True)], dim=1)
        convolved = convolved.reshape(batch, heads, width, -1).transpose(-1, -2)
        return F.pad(self.gating(q[:, :, 1:], convolved), (0, 0, 1, 0))


class ExplicitFactorAttn(nn.Module):
    """timm ``FactorAttnConvRelPosEnc``: scale·Q·(softmax(K)ᵀ·V) + Q ⊙ conv(V), the softmax over
    the tokens and both products modules. Shares the original's qkv, relative position encoding and
    proj under their names."""

    def __init__(self, attn: FactorAttnConvRelPosEnc) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.qkv, self.crpe, self.proj, self.proj_drop = attn.qkv, attn.crpe, attn.proj, attn.proj_drop
        self.softmax = nn.Softmax(dim=2)  # over the tokens, per channel
        # softmax(K)ᵀ [B, heads, head_dim, tokens] · V [B, heads, tokens, head_dim]
        self.context = Product("matmul", 1.0, channels_a=(-3, -2), channels_b=(-3, -1))
        # Q [B, heads, tokens, head_dim] · context [B, heads, head_dim, head_dim], scaled
        self.query = Product("matmul", attn.scale, channels_a=(-3, -1), channels_b=(-3,))

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        batch, tokens, channels = x.shape
        q, k, v = split_qkv(self.qkv(x), self.num_heads)
        out = self.query(q, self.context(self.softmax(k).transpose(-1, -2), v)) + self.crpe(q, v, size=size)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, tokens, channels)))


class StagePatchEmbed(PatchEmbed):
    """timm ``PatchEmbed`` opening a later CoaT stage: it reads the previous stage's tokens, not the
    image, so its convolution is a weight layer like any other."""


class Held(nn.Module):
    """A module the model holds only to hand to its blocks (CoaT's ``cpe1``... and ``crpe1``...),
    never run by the model itself: kept as it is, its parameters under the ANN's keys."""


def _staged(coat: CoaT) -> CoaT:
    """The model itself, its later stages' patch embeddings made :class:`StagePatchEmbed` and the
    encodings it holds for its blocks (who run their own copies) :class:`Held`: no new parameters,
    the keys stay the ANN's."""
    for stage in range(1, 5):
        embed = getattr(coat, f"patch_embed{stage}")
        if stage > 1 and embed is not None:
            embed.__class__ = StagePatchEmbed
        for name in (f"cpe{stage}", f"crpe{stage}"):
            getattr(coat, name).__class__ = Held
    return coat


def _refuse_parallel(block: ParallelBlock) -> str:
    return "CoaT's parallel blocks are not supported (the model runs one position encoding per stage in each)"


STAGES = ("serial_blocks1", "serial_blocks2", "serial_blocks3", "serial_blocks4")

register(ConvRelPosEnc, Role.CONTAINER, twin=ExplicitConvRelPosEnc)
register(FactorAttnConvRelPosEnc, Role.CONTAINER, twin=ExplicitFactorAttn)
# the first patch embedding reads the image; one rate link from it to the head
register(CoaT, Role.CONTAINER, twin=_staged, links=to_head, blocks=chained_blocks(*STAGES))
register(ParallelBlock, Role.CONTAINER, check=_refuse_parallel)
register(Held, Role.CONSTANT)  # never run: kept as it is, reported as a constant
for cls in (ExplicitConvRelPosEnc, ExplicitFactorAttn, StagePatchEmbed, ConvPosEnc, SerialBlock):
    register(cls, Role.CONTAINER)
