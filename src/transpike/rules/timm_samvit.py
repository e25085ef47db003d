"""Rules for timm's SAM image encoder (``VisionTransformerSAM``: the Segment Anything ViT-B/L/H
encoders and their classifying ``_224`` variant; Kirillov et al. 2023, "Segment Anything").

A ViT on a channels-last token map: most blocks attend within windows (padding and window
partition are linear), a few over the whole map; the scores get a decomposed relative position
term, each query's product with learned per-offset embeddings along height and along width
(linear in q: float work, charged in the full energy form), or the q and k of RoPE variants are
rotated by constant angles (linear). A convolutional neck (1×1 and 3×3 convolutions with channel
LayerNorms) follows. The patch embedding reads the image; one rate link runs from it to the head's
classifier (none in the headless encoders, whose output is the neck's). ``blocks=k`` counts the
blocks.
"""

from __future__ import annotations

from timm.layers import apply_rot_embed_cat
from timm.models.vision_transformer_sam import (
    Attention,
    Block,
    VisionTransformerSAM,
    get_decomposed_rel_pos_bias,
)
from torch import Tensor

from . import Role, register
from .links import whole_network
from .timm_twins import SoftmaxHeads


class ExplicitSamAttention(SoftmaxHeads):
    """timm SAM ``Attention`` with Q·Kᵀ, softmax and attn·V as modules, on a [B, H, W, C] map;
    the relative position term (linear in q) added to the scores, or RoPE applied to q and k.
    Shares the original's submodules and parameters under their names."""

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        self.num_heads, self.qkv, self.rope = attn.num_heads, attn.qkv, attn.rope
        self.use_rel_pos = attn.use_rel_pos
        if self.use_rel_pos:
            self.rel_pos_h, self.rel_pos_w = attn.rel_pos_h, attn.rel_pos_w
        self._init_heads(attn)
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, _ = x.shape
        tokens = height * width
        q, k, v = (
            self.qkv(x.reshape(batch, tokens, -1))
            .view(batch, tokens, 3, self.num_heads, -1)
            .permute(2, 0, 3, 1, 4)
        )
        q, k, bias = self.q_norm(q), self.k_norm(k), None
        if self.use_rel_pos:  # timm's term on q as [B·heads, tokens, head_dim]
            flat = q.reshape(batch * self.num_heads, tokens, -1)
            bias = get_decomposed_rel_pos_bias(
                flat, self.rel_pos_h, self.rel_pos_w, (height, width), (height, width)
            )
            bias = bias.view(batch, self.num_heads, tokens, tokens)
        elif self.rope is not None:
            rope = self.rope.get_embed()
            q, k = apply_rot_embed_cat(q, rope).type_as(v), apply_rot_embed_cat(k, rope).type_as(v)
        out = self.heads(q, k, v, bias).transpose(1, 2).reshape(batch, tokens, -1)
        return self.proj_drop(self.proj(out)).view(batch, height, width, -1)


register(Attention, Role.CONTAINER, twin=ExplicitSamAttention)
register(VisionTransformerSAM, Role.CONTAINER, links=whole_network)  # its patch embedding reads the image
for cls in (ExplicitSamAttention, Block):
    register(cls, Role.CONTAINER)
