"""Rules for timm's CaiT (``Cait``: CaiT-XXS to M, Touvron et al. 2021, "Going deeper with Image
Transformers").

CaiT runs self-attention blocks over the patch tokens, then class-attention blocks in which only
the class token attends to itself and the patches, and classifies the class token. Both kinds of
block scale their branches by LayerScale parameters (linear). Its self-attention is talking-heads
attention (Shazeer et al. 2020): a Linear across the heads mixes the scores before the softmax
(``proj_l``) and another the attention maps after it (``proj_w``). Both are weight layers like any
Linear, so each gets an MT neuron before it (on the scores, on the maps); Q·Kᵀ and attn·V multiply
two spiking operands as in a ViT. Class attention takes q from the class token alone, k and v from
all tokens. Between converted modules the model only adds constants (position embeddings, the
class token), sums, scales, concatenates and selects tokens, so one rate link runs from the patch
embedding to the head. ``blocks=k`` counts the self-attention blocks, then the class-attention
blocks; so that a class-attention block can be left analog (an EC module of one input), the
converted copy hands it the class token and the patches as one tensor.
"""

from __future__ import annotations

import torch
from timm.models.cait import (
    Cait,
    ClassAttn,
    LayerScaleBlock,
    LayerScaleBlockClassAttn,
    TalkingHeadAttn,
)
from torch import Tensor, nn

from . import Role, register
from .links import to_head
from .timm_twins import SoftmaxHeads, split_qkv


def across_heads(layer: nn.Module, maps: Tensor) -> Tensor:
    """A Linear over the heads of [B, heads, tokens, tokens] maps (talking heads)."""
    return layer(maps.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ExplicitTalkingHeadAttn(SoftmaxHeads):
    """timm ``TalkingHeadAttn`` with Q·Kᵀ, the heads' mixing, softmax and attn·V as modules. Shares
    the original's qkv, proj_l, proj_w and proj."""

    def __init__(self, attn: TalkingHeadAttn) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.qkv = attn.qkv
        self._init_heads(attn)
        self.proj_l, self.proj_w = attn.proj_l, attn.proj_w
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, channels = x.shape
        q, k, v = split_qkv(self.qkv(x), self.num_heads)
        attn = self.softmax(across_heads(self.proj_l, self.qk(q, k.transpose(-2, -1))))
        attn = self.attn_drop(across_heads(self.proj_w, attn))
        out = self.av(attn, v).transpose(1, 2).reshape(batch, tokens, channels)
        return self.proj_drop(self.proj(out))


class ExplicitClassAttn(SoftmaxHeads):
    """timm ``ClassAttn`` (CaiT, XCiT) or CrossViT's ``CrossAttention`` with Q·Kᵀ, softmax and
    attn·V as modules (timm may call one fused kernel): the first token's query against every
    token's key. Shares the original's q, k and v projections (named ``names``) and proj."""

    def __init__(self, attn: nn.Module, names: tuple[str, str, str] = ("q", "k", "v")) -> None:
        super().__init__()
        self.num_heads, self.names = attn.num_heads, names
        for name in names:
            setattr(self, name, getattr(attn, name))
        self._init_heads(attn)
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def forward(self, x: Tensor) -> Tensor:
        batch, _, channels = x.shape
        width = channels // self.num_heads
        q, k, v = (
            getattr(self, name)(part).reshape(batch, -1, self.num_heads, width).transpose(1, 2)
            for name, part in zip(self.names, (x[:, :1], x, x), strict=True)
        )
        out = self.heads(q, k, v).transpose(1, 2).reshape(batch, 1, channels)
        return self.proj_drop(self.proj(out))


class JoinedClassAttnBlock(LayerScaleBlockClassAttn):
    """timm ``LayerScaleBlockClassAttn`` reading one tensor, [class token; patches], and returning
    the class token's update: what timm computes from the two separately."""

    def forward(self, u: Tensor) -> Tensor:
        x_cls = u[:, :1] + self.drop_path(self.gamma_1 * self.attn(self.norm1(u)))
        return x_cls + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x_cls)))


class JoinedCait(Cait):
    """timm ``Cait`` whose class-attention blocks read [class token; patches] as one tensor."""

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.blocks(self.pos_drop(self.patch_embed(x) + self.pos_embed))
        x_cls = self.cls_token.expand(x.shape[0], -1, -1)
        for block in self.blocks_token_only:
            x_cls = block(torch.cat((x_cls, x), dim=1))
        return self.norm(torch.cat((x_cls, x), dim=1))


def joined(cait: Cait) -> JoinedCait:
    """The model itself, its class and its class-attention blocks' made the joined ones (no new
    parameters: the keys stay the ANN's), before any block is left analog."""
    cait.__class__ = JoinedCait
    for block in cait.blocks_token_only:
        block.__class__ = JoinedClassAttnBlock
    return cait


def chained_blocks(*lists: str):
    """``blocks=k``'s blocks for a model that runs the blocks of several ModuleLists in turn."""

    def paths(model: nn.Module) -> list[str]:
        return [f"{name}.{i}" for name in lists for i in range(len(model.get_submodule(name)))]

    return paths


register(TalkingHeadAttn, Role.CONTAINER, twin=ExplicitTalkingHeadAttn)
register(ClassAttn, Role.CONTAINER, twin=ExplicitClassAttn)
# blocks=k reads the ANN; one rate link from the patch embedding to the head
register(Cait, Role.CONTAINER, twin=joined, blocks=chained_blocks("blocks", "blocks_token_only"))
register(JoinedCait, Role.CONTAINER, links=to_head)
for cls in (
    ExplicitTalkingHeadAttn,
    ExplicitClassAttn,
    LayerScaleBlock,
    LayerScaleBlockClassAttn,
    JoinedClassAttnBlock,
):
    register(cls, Role.CONTAINER)
