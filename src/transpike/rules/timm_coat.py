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
selection, so one rate link runs from the first patch embedding to the head.

CoaT Tiny to Small follow the serial blocks with parallel blocks over scales 2-4: factorized
attention on each scale, each scale's result plus the others' resized to it (bilinear
interpolation: linear), then one MLP (timm shares it among the scales; converted, each scale gets
its copy). timm's model runs its one position encoding per scale before every parallel block;
converted, each block runs its own copy, and takes and returns the three scales packed into one
tensor, so that ``blocks=k`` can leave it analog. The head aggregates the three scales' class
tokens with a 1×1 convolution over the scales (a weight layer). ``blocks=k`` counts the serial
blocks stage by stage, then the parallel blocks.
"""

from __future__ import annotations

import copy

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
    insert_cls,
    remove_cls,
)
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import to_head
from .packing import pack, unpack
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


class JoinedParallelBlock(ParallelBlock):
    """timm ``ParallelBlock`` that runs its own copies of the model's position encodings of scales
    2-4 first (timm's model runs its one copy of each before every parallel block) and reads and
    returns those scales packed into one tensor (``shapes``: each scale's tokens and width;
    ``sizes``: the four scales' grids), so that ``blocks=k`` can leave it analog (an EC module
    returns one tensor). The first scale, which the block passes unchanged, is not read."""

    shapes: list[tuple[int, int]]
    sizes: list[tuple[int, int]]

    def forward(self, packed: Tensor) -> Tensor:
        encodings = (self.cpe2, self.cpe3, self.cpe4)
        scales = unpack(packed, self.shapes)
        x2, x3, x4 = (cpe(x, size) for cpe, x, size in zip(encodings, scales, self.sizes[1:], strict=True))
        return pack(super().forward(None, x2, x3, x4, self.sizes)[1:])


class JoinedCoaT(CoaT):
    """timm ``CoaT`` with parallel blocks, which pass scales 2-4 as one packed tensor (``shapes``:
    each scale's tokens and width) and run their own position encodings."""

    shapes: list[tuple[int, int]]

    @property
    def ann_keys(self) -> dict[str, str]:
        """Each parallel block's copies of the position encodings, under the model's keys."""
        return {
            f"parallel_blocks.{block}.cpe{scale}.{key}": f"cpe{scale}.{key}"
            for block in range(len(self.parallel_blocks))
            for scale in (2, 3, 4)
            for key in getattr(self, f"cpe{scale}").state_dict()
        }

    def forward_features(self, x: Tensor) -> list[Tensor]:
        scales = []
        for stage in range(1, 5):
            embed = getattr(self, f"patch_embed{stage}")
            x = insert_cls(embed(x), getattr(self, f"cls_token{stage}"))
            for block in getattr(self, f"serial_blocks{stage}"):
                x = block(x, size=embed.grid_size)
            scales.append(x)
            x = remove_cls(x).unflatten(1, embed.grid_size).permute(0, 3, 1, 2)  # the next stage's map
        packed = pack(scales[1:])
        for block in self.parallel_blocks:
            packed = block(packed)
        norms = (self.norm2, self.norm3, self.norm4)
        return [norm(scale) for norm, scale in zip(norms, unpack(packed, self.shapes), strict=True)]


def _joined(coat: CoaT) -> None:
    """``coat``'s class and its parallel blocks' made the joined ones, each block given a copy of
    the model's position encodings of scales 2-4 (its keys mapped back by ``ann_keys``)."""
    sizes = [tuple(getattr(coat, f"patch_embed{stage}").grid_size) for stage in range(1, 5)]
    shapes = [(1 + h * w, dim) for (h, w), dim in zip(sizes[1:], coat.embed_dims[1:], strict=True)]
    coat.__class__, coat.shapes = JoinedCoaT, shapes
    for block in coat.parallel_blocks:
        block.__class__, block.shapes, block.sizes = JoinedParallelBlock, shapes, sizes
        for scale in (2, 3, 4):
            setattr(block, f"cpe{scale}", copy.deepcopy(getattr(coat, f"cpe{scale}")))


def _staged(coat: CoaT) -> CoaT:
    """The model itself, its later stages' patch embeddings made :class:`StagePatchEmbed` and the
    encodings it holds for its blocks (who run their own copies) :class:`Held`, its parallel
    blocks (if any) joined: no new parameters, the keys stay the ANN's."""
    if coat.parallel_blocks is not None:
        _joined(coat)
    for stage in range(1, 5):
        embed = getattr(coat, f"patch_embed{stage}")
        if stage > 1 and embed is not None:
            embed.__class__ = StagePatchEmbed
        for name in (f"cpe{stage}", f"crpe{stage}"):
            getattr(coat, name).__class__ = Held
    return coat


def _refuse_features(coat: CoaT) -> str | None:
    """Why ``coat`` cannot be converted: built to return its feature maps (a dict), not outputs."""
    return (
        "return_interm_layers=True: the model returns feature maps, not outputs"
        if coat.return_interm_layers
        else None
    )


def _blocks(coat: CoaT) -> list[str]:
    """``blocks=k``'s blocks: the serial blocks stage by stage, then the parallel blocks."""
    serial = chained_blocks("serial_blocks1", "serial_blocks2", "serial_blocks3", "serial_blocks4")(coat)
    return serial + [f"parallel_blocks.{i}" for i in range(coat.parallel_depth)]


register(ConvRelPosEnc, Role.CONTAINER, twin=ExplicitConvRelPosEnc)
register(FactorAttnConvRelPosEnc, Role.CONTAINER, twin=ExplicitFactorAttn)
# the first patch embedding reads the image; one rate link from it to the head
register(CoaT, Role.CONTAINER, twin=_staged, check=_refuse_features, links=to_head, blocks=_blocks)
register(JoinedCoaT, Role.CONTAINER, links=to_head)
register(Held, Role.CONSTANT)  # never run: kept as it is, reported as a constant
for cls in (
    ExplicitConvRelPosEnc,
    ExplicitFactorAttn,
    StagePatchEmbed,
    ConvPosEnc,
    SerialBlock,
    JoinedParallelBlock,
):
    register(cls, Role.CONTAINER)
