"""Rules for timm's TNT (Han et al. 2021, "Transformer in Transformer"; TNT-S and TNT-B, legacy
or not).

TNT keeps two token sets: pixel embeddings within each patch (an inner Transformer attends over
the pixels of one patch) and patch embeddings (an outer Transformer over the patches and a class
token); each block adds a projection of the normed pixels to the patch tokens. Its attention
computes q and k from one Linear and v from another: the twin makes Q·Kᵀ, the softmax and attn·V
modules. A block reads and returns both sets; the joined model hands them from block to block as
one tensor (the pixel set laid out per image), so that ``blocks=k`` can leave any block analog.
The pixel embedding's convolution reads the image (after or before cutting it into patches); the
position embeddings and the class token are constants; one rate link runs from the image to the
head.
"""

from __future__ import annotations

import torch
from timm.models import tnt
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import to_head
from .packing import pack, unpack


class ExplicitTntAttention(nn.Module):
    """timm's TNT ``Attention`` with Q·Kᵀ (``scores``: timm's own ``qk`` is the Linear that gives q
    and k), softmax and attn·V as modules; v from ``v``. Shares the original's submodules under
    their names."""

    def __init__(self, attn: tnt.Attention) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.qk, self.v = attn.num_heads, attn.head_dim, attn.qk, attn.v
        # operands [B, heads, tokens, head_dim] (q, v), [B, heads, head_dim, tokens] (kᵀ), attn
        self.scores = Product("matmul", attn.scale, channels_a=(-3, -1), channels_b=(-3, -2))
        self.softmax, self.attn_drop = nn.Softmax(dim=-1), attn.attn_drop
        self.av = Product("matmul", channels_a=(-3,), channels_b=(-3, -1))
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, _ = x.shape
        qk = self.qk(x).reshape(batch, tokens, 2, self.num_heads, self.head_dim)
        q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)
        v = self.v(x).reshape(batch, tokens, self.num_heads, -1).transpose(1, 2)
        attn = self.attn_drop(self.softmax(self.scores(q, k.transpose(-2, -1))))
        return self.proj_drop(self.proj(self.av(attn, v).transpose(1, 2).reshape(batch, tokens, -1)))


class JoinedBlock(tnt.Block):
    """A TNT block that reads and returns the pixel and patch embeddings as one tensor
    (:func:`~.packing.pack` of the pixels per image, [B, N·P, C_in], and the patches,
    [B, N + 1, C]); ``shapes``: those two (tokens, width)."""

    shapes: list[tuple[int, int]]

    def forward(self, packed: Tensor) -> Tensor:
        pixels, patches = unpack(packed, self.shapes)
        batch, width = len(packed), pixels.shape[-1]
        per_patch = pixels.shape[1] // (patches.shape[1] - 1)  # timm's inner sequences: one per patch
        pixels, patches = super().forward(pixels.reshape(-1, per_patch, width), patches)
        return pack([pixels.reshape(batch, -1, width), patches])


class JoinedTnt(tnt.TNT):
    """A ``TNT`` whose blocks are :class:`JoinedBlock`: timm's embedding, the blocks on one tensor,
    the patch tokens of the last one normed (``shapes``: the two sets', as the blocks')."""

    shapes: list[tuple[int, int]]

    def forward_features(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        pixels = self.pixel_embed(x, self.pixel_pos)
        patches = self.norm2_proj(self.proj(self.norm1_proj(pixels.reshape(batch, self.num_patches, -1))))
        patches = torch.cat((self.cls_token.expand(batch, -1, -1), patches), dim=1)
        patches = self.pos_drop(patches + self.patch_pos)
        packed = pack([pixels.reshape(batch, -1, pixels.shape[-1]), patches])
        for block in self.blocks:
            packed = block(packed)
        return self.norm(unpack(packed, self.shapes)[1])


def joined(model: tnt.TNT) -> JoinedTnt:
    """The model itself, its class and its blocks' made the joined ones, each block told the two
    sets' shapes (no new parameters: the keys stay the ANN's), before any block is left analog."""
    inner = model.pixel_pos.shape[1]
    pixels = model.num_patches * model.pixel_pos.shape[2] * model.pixel_pos.shape[3]
    shapes = [(pixels, inner), (model.num_patches + 1, model.embed_dim)]
    for block in model.blocks:
        block.__class__, block.shapes = JoinedBlock, shapes
    model.__class__, model.shapes = JoinedTnt, shapes
    return model


register(tnt.Attention, Role.CONTAINER, twin=ExplicitTntAttention)
register(tnt.TNT, Role.CONTAINER, twin=joined)
register(JoinedTnt, Role.CONTAINER, links=to_head)
register(tnt.PixelEmbed, Role.INPUT)  # its convolution reads the image
for cls in (ExplicitTntAttention, JoinedBlock):
    register(cls, Role.CONTAINER)
