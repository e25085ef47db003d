"""Rules for timm's ``NaFlexVit`` (``naflexvit_*``: SigLIP 2 NaFlex towers, RADIO, and classic ViT
or EVA configurations built on it) on image batches.

On an image ``NaFlexVit`` is a ViT: its ``embeds`` module patchifies the image, projects the patches
(a Linear on flattened patches or a convolution), adds position embeddings (learned or factorized,
resized to the grid: parameters alone) and the class and register tokens; all of it reads the image
and is the same at every step, so the module is the input (direct coding), as ViT's patch embedding.
Its blocks are timm's ViT or EVA blocks (rotary embeddings computed by the model from the grid, a
constant), its pools those of ViT (a max or avg-max pool becomes a :class:`TokenPool`, the
attention pool its twin), and its links a ViT's.

NaFlex mode (pre-patchified tokens with coordinates and validity masks) masks the attention, which
the converted model refuses with an error saying so.
"""

from __future__ import annotations

from timm.layers.pos_embed_sincos import RotaryEmbeddingMRope
from timm.models.naflexvit import NaFlexEmbeds, NaFlexVit
from torch import Tensor, nn

from . import Role, register
from .timm_twins import LINEAR_POOLS, TokenPool
from .timm_vit import model_links


class ImageNaFlexVit(NaFlexVit):
    """A ``NaFlexVit`` that takes image batches only, pooled by its ``token_pool`` child
    (:class:`TokenPool`) where its pool is max or avg-max, instead of timm's function."""

    def forward(
        self,
        x: Tensor | dict,
        patch_coord: Tensor | None = None,
        patch_valid: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        if isinstance(x, dict) or any(a is not None for a in (patch_coord, patch_valid, attn_mask)):
            raise ValueError(
                "the converted NaFlexVit takes image batches [B, C, H, W]: NaFlex mode (patches with "
                "patch_coord, patch_valid or an attention mask) masks the attention, which "
                "conversion does not support"
            )
        return super().forward(x)

    def _pool(self, x: Tensor, pool_type: str | None = None, patch_valid: Tensor | None = None) -> Tensor:
        if hasattr(self, "token_pool") and pool_type is None:
            return self.token_pool(x)
        return super()._pool(x, pool_type, patch_valid)


def _image_twin(model: NaFlexVit) -> nn.Module:
    """The model itself as an :class:`ImageNaFlexVit`, with a :class:`TokenPool` when its pool is
    nonlinear (no parameters: the keys stay the ANN's)."""
    model.__class__ = ImageNaFlexVit
    if model.attn_pool is None and model.global_pool not in LINEAR_POOLS:
        model.token_pool = TokenPool(model.global_pool, model.num_prefix_tokens, model.pool_include_prefix)
    return model


register(NaFlexVit, Role.CONTAINER, twin=_image_twin)
register(ImageNaFlexVit, Role.CONTAINER, links=model_links)
register(NaFlexEmbeds, Role.INPUT)
register(RotaryEmbeddingMRope, Role.PASSTHROUGH)  # sin/cos tables, read by the attention
