"""Rules for timm's PiT (``PoolingVisionTransformer``: PiT-Ti to B and the distilled variants;
Heo et al. 2021, "Rethinking Spatial Dimensions of Vision Transformers").

PiT is a ViT in three stages whose patch tokens shrink between stages: a pooling layer turns the
token map into a smaller, wider one with a strided depthwise convolution and widens the class
tokens with a Linear (both weight layers with their MT neurons); the blocks are timm's ViT blocks.
timm hands each stage the map and the class tokens as a pair; the converted copy hands it one
tensor, the class tokens followed by the map's tokens, as the blocks see them (each stage knows its
grid: the model's input size is fixed by its position embedding), so that ``blocks=k`` can leave a
whole stage analog. The patch embedding's convolution reads the image; one rate link runs from it
to the head (both heads, averaged, in the distilled models). ``blocks=k`` counts the blocks stage
by stage.
"""

from __future__ import annotations

import torch
from timm.models.pit import ConvEmbedding, Pooling, PoolingVisionTransformer, SequentialTuple, Transformer
from torch import Tensor, nn

from . import Link, Role, register
from .links import link_all


class JoinedTransformer(Transformer):
    """A PiT stage that takes and returns the class tokens and the map's tokens as one tensor
    [B, prefix + H·W, C] (``prefix`` class tokens, the incoming map ``grid`` = (H, W))."""

    prefix: int
    grid: tuple[int, int]

    def forward(self, tokens: Tensor) -> Tensor:
        cls_tokens, x = tokens[:, : self.prefix], tokens[:, self.prefix :]
        x = x.transpose(1, 2).unflatten(2, self.grid)
        if self.pool is not None:
            x, cls_tokens = self.pool(x, cls_tokens)
        tokens = torch.cat((cls_tokens, x.flatten(2).transpose(1, 2)), dim=1)
        return self.blocks(self.norm(tokens))


class JoinedPit(PoolingVisionTransformer):
    """timm ``PoolingVisionTransformer`` whose stages pass one tensor (:class:`JoinedTransformer`)."""

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.pos_drop(self.patch_embed(x) + self.pos_embed)
        cls_tokens = self.cls_token.expand(x.shape[0], -1, -1)
        tokens = self.transformers(torch.cat((cls_tokens, x.flatten(2).transpose(1, 2)), dim=1))
        return self.norm(tokens[:, : self.num_tokens])


def _pooled(grid: tuple[int, int], conv: nn.Conv2d) -> tuple[int, int]:
    """The map size a convolution makes of a ``grid``: ⌊(n + 2p − k)/s⌋ + 1 per side."""
    return tuple(
        (n + 2 * p - k) // s + 1
        for n, p, k, s in zip(grid, conv.padding, conv.kernel_size, conv.stride, strict=True)
    )


def joined(model: PoolingVisionTransformer) -> JoinedPit:
    """The model itself, its class and its stages' made the joined ones, each stage told its
    incoming grid (no new parameters: the keys stay the ANN's), before any block is left analog."""
    grid = model.patch_embed.grid_size
    for stage in model.transformers:
        stage.__class__, stage.prefix, stage.grid = JoinedTransformer, model.num_tokens, grid
        grid = _pooled(grid, stage.pool.conv) if stage.pool is not None else grid
    model.__class__ = JoinedPit
    return model


def _model_links(model: JoinedPit) -> list[Link]:
    """One link from the patch embedding to the head (and the distillation head); none for a
    headless model."""
    if isinstance(model.head, nn.Identity):
        return []
    return link_all(model, "head") if model.head_dist is None else link_all(model, "head", "head_dist")


def _block_paths(model: nn.Module) -> list[str]:
    """Each stage's blocks in turn."""
    return [
        f"transformers.{s}.blocks.{b}"
        for s, stage in enumerate(model.transformers)
        for b in range(len(stage.blocks))
    ]


register(PoolingVisionTransformer, Role.CONTAINER, twin=joined, blocks=_block_paths)
register(JoinedPit, Role.CONTAINER, links=_model_links, blocks=_block_paths)
register(ConvEmbedding, Role.INPUT)  # its convolution reads the image
for cls in (JoinedTransformer, SequentialTuple, Pooling):
    register(cls, Role.CONTAINER)
