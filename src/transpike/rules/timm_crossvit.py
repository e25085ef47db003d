"""Rules for timm's CrossViT (``CrossVit``: CrossViT-9 to 18, with or without the dagger's
convolutional patch embeddings; Chen et al. 2021, "CrossViT: Cross-Attention Multi-Scale Vision
Transformer").

Two branches embed the image at two patch sizes (the second from a rescaled copy of the image,
the same at every step), each patch embedding's first convolution reading it (direct coding). Each
multi-scale block runs ViT blocks on each branch, then fuses them: each branch's class token,
projected to the other branch's width (LayerNorm, GELU, Linear), attends to the other branch's
patches by cross-attention (q from the class token alone, as CaiT's class attention), and is
projected back. Token selection, concatenation, the position embeddings and class tokens are
linear or constant, so one rate link runs from the patch embeddings to the two heads, whose
outputs the model averages. ``blocks=k`` counts the multi-scale blocks; so that a block can be
left analog (an EC module of one input), the converted copy hands each block both branches packed
into one tensor.
"""

from __future__ import annotations

from functools import partial

from timm.models.crossvit import CrossAttention, CrossAttentionBlock, CrossVit, MultiScaleBlock, PatchEmbed
from torch import Tensor, nn

from . import Link, Role, register
from .links import link_all
from .packing import pack, unpack
from .timm_cait import ExplicitClassAttn


def _network_links(crossvit: CrossVit) -> list[Link]:
    """One link from the patch embeddings to the heads (converted, or left analog by ``blocks=k``),
    each emitting the increments the model averages; none without heads."""
    if any(isinstance(head, nn.Identity) for head in crossvit.head):
        return []
    return link_all(crossvit, *(f"head.{i}" for i in range(len(crossvit.head))))


class JoinedMultiScaleBlock(MultiScaleBlock):
    """timm ``MultiScaleBlock`` reading and returning both branches as one packed tensor (``shapes``:
    each branch's tokens and width), so that ``blocks=k`` can leave it analog: an EC module
    returns one tensor."""

    shapes: list[tuple[int, int]]

    def forward(self, packed: Tensor) -> Tensor:
        return pack(super().forward(unpack(packed, self.shapes)))


class JoinedCrossVit(CrossVit):
    """timm ``CrossVit`` whose multi-scale blocks pass both branches as one packed tensor
    (``shapes``: each branch's tokens and width)."""

    shapes: list[tuple[int, int]]

    def forward_features(self, x: Tensor) -> list[Tensor]:
        packed = pack(self._embed(x))
        for block in self.blocks:
            packed = block(packed)
        return [norm(branch) for norm, branch in zip(self.norm, unpack(packed, self.shapes), strict=True)]


def joined(crossvit: CrossVit) -> JoinedCrossVit:
    """The model itself, its class and its blocks' made the joined ones (no new parameters: the keys
    stay the ANN's), before any block is left analog."""
    shapes = [(getattr(crossvit, f"pos_embed_{i}").shape[1], dim) for i, dim in enumerate(crossvit.embed_dim)]
    crossvit.__class__, crossvit.shapes = JoinedCrossVit, shapes
    for block in crossvit.blocks:
        block.__class__, block.shapes = JoinedMultiScaleBlock, shapes
    return crossvit


register(CrossAttention, Role.CONTAINER, twin=partial(ExplicitClassAttn, names=("wq", "wk", "wv")))
register(PatchEmbed, Role.INPUT)  # its (first) convolution reads the image
# blocks=k reads the ANN; one rate link from the patch embeddings to the heads
register(CrossVit, Role.CONTAINER, twin=joined)
register(JoinedCrossVit, Role.CONTAINER, links=_network_links)
for cls in (CrossAttentionBlock, JoinedMultiScaleBlock):
    register(cls, Role.CONTAINER)
