"""Rules for timm's ViT with relative position biases (``VisionTransformerRelPos``: the
``vit_relpos_*`` and ``vit_srelpos_*`` models, with or without a class token, pre-norm blocks or
residual post-norm ones).

Each attention adds a relative position bias to its scores: from its own module (a table or the
log-coordinate MLP of Swin V2) or from one module the model shares among all blocks. Either is a
function of parameters alone, the same at every step (a constant, as in BEiT and MaxViT). So the
attention gets an explicit twin, and the pre-norm blocks and the model hand rates along a ViT's
links: the residual stream, the final norm or fc_norm into the head.
"""

from __future__ import annotations

from timm.models.vision_transformer_relpos import (
    RelPosAttention,
    RelPosBlock,
    ResPostRelPosBlock,
    VisionTransformerRelPos,
)
from torch import Tensor

from . import Role, register
from .timm_twins import ExplicitAttention, split_qkv
from .timm_vit import attention_links, block_links, model_links


class ExplicitRelPosAttention(ExplicitAttention):
    """timm's ``RelPosAttention`` with Q·Kᵀ, softmax and attn·V as modules: the scores plus this
    block's relative position bias, or else the model's shared one. Shares the original's
    submodules under their names."""

    def __init__(self, attn: RelPosAttention) -> None:
        super().__init__(attn)
        self.rel_pos = attn.rel_pos

    def forward(self, x: Tensor, shared_rel_pos: Tensor | None = None) -> Tensor:
        q, k, v = split_qkv(self.qkv(x), self.num_heads)
        bias = self.rel_pos.get_bias() if self.rel_pos is not None else shared_rel_pos
        return self._attend(x, self.q_norm(q), self.k_norm(k), v, bias)


register(RelPosAttention, Role.CONTAINER, twin=ExplicitRelPosAttention)
register(ExplicitRelPosAttention, Role.CONTAINER, links=attention_links)
register(RelPosBlock, Role.CONTAINER, links=block_links)
register(ResPostRelPosBlock, Role.CONTAINER)  # its norms feed the residual stream: no links
register(VisionTransformerRelPos, Role.CONTAINER, links=model_links)
