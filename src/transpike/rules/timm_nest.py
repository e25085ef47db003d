"""Rules for timm's NesT (``Nest``: NesT-T to B and the Jax ports; Zhang et al. 2022, "Nested
Hierarchical Transformer: Towards Accurate, Data-Efficient and Interpretable Visual
Understanding").

NesT cuts the token map into square blocks and runs ViT layers within each block (attention over
the block's tokens only, an extra "block" dimension on q, k and v), then aggregates: a
convolution, a LayerNorm over the channels and a 3 × 3 max pool of stride 2 (an EC module) halve
the map and merge four blocks into one, until one block is left. Blockify, deblockify and the
position embeddings are linear. The patch embedding's convolution reads the image; one rate link
runs from it to the head. ``blocks=k`` counts the Transformer layers level by level.
"""

from __future__ import annotations

from timm.models.nest import Attention, ConvPool, Nest, NestLevel, TransformerLayer
from torch import Tensor

from . import Role, register
from .links import to_head
from .timm_twins import SoftmaxHeads


class ExplicitBlockAttention(SoftmaxHeads):
    """timm NesT ``Attention`` with Q·Kᵀ, softmax and attn·V as modules: the tokens of each image
    block [B, T, N, C] attend to each other, q, k and v laid out [B, T, heads, N, head_dim]; the
    output's channels come head-minor, as timm lays them out. Shares the original's submodules
    under their names."""

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        self.num_heads, self.qkv = attn.num_heads, attn.qkv
        self._init_heads(attn)
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def forward(self, x: Tensor) -> Tensor:
        batch, blocks, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(batch, blocks, tokens, 3, self.num_heads, -1).permute(3, 0, 1, 4, 2, 5)
        out = self.heads(*qkv.unbind(0))  # [B, T, heads, N, head_dim]
        out = out.permute(0, 1, 3, 4, 2).reshape(batch, blocks, tokens, channels)
        return self.proj_drop(self.proj(out))


def _block_paths(model: Nest) -> list[str]:
    """The Transformer layers of each level in turn."""
    return [
        f"levels.{level}.transformer_encoder.{layer}"
        for level, stage in enumerate(model.levels)
        for layer in range(len(stage.transformer_encoder))
    ]


register(Attention, Role.CONTAINER, twin=ExplicitBlockAttention)
register(Nest, Role.CONTAINER, links=to_head, blocks=_block_paths)  # its patch embedding reads the image
for cls in (ExplicitBlockAttention, TransformerLayer, ConvPool, NestLevel):
    register(cls, Role.CONTAINER)
