"""Rules for timm's Visformer (``Visformer``: Visformer-Tiny and -Small; Chen et al. 2021,
"Visformer: The Vision-friendly Transformer").

Visformer works on feature maps throughout: a convolution stem (convolution, BatchNorm, ReLU),
three stages opened by patch embeddings (strided convolutions with BatchNorm), blocks of attention
on the map's pixels (q, k and v from one 1×1 convolution, the output projected by another) and
MLPs of 1×1 (and, in the first stage, grouped 3×3) convolutions with GELU, BatchNorm as the
blocks' norms (affine in evaluation). Every convolution is a weight layer with its MT neuron but
the first that reads the image (the stem's, or the first patch embedding's when the model has no
stem); ReLU and GELU become EC modules; Q·Kᵀ, the softmax and attn·V convert as in a ViT. One rate
link runs from the stem to the head. ``blocks=k`` counts the blocks stage by stage.
"""

from __future__ import annotations

from timm.layers import PatchEmbed
from timm.models.visformer import Attention, Block, SpatialMlp, Visformer
from torch import Tensor

from . import Role, register
from .links import to_head
from .timm_coat import StagePatchEmbed
from .timm_twins import SoftmaxHeads


class ExplicitMapAttention(SoftmaxHeads):
    """timm Visformer ``Attention`` with Q·Kᵀ, softmax and attn·V as modules (timm may call one
    fused kernel): the pixels of a [B, C, H, W] map attend to each other, q, k and v from one 1×1
    convolution laid out [3, heads, head_dim] along its channels. Shares the original's submodules
    under their names."""

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        self.qkv = attn.qkv
        self._init_heads(attn)
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        qkv = self.qkv(x).reshape(batch, 3, self.num_heads, self.head_dim, -1).permute(1, 0, 2, 4, 3)
        out = self.heads(*qkv.unbind(0))  # [B, heads, pixels, head_dim]
        return self.proj_drop(self.proj(out.transpose(2, 3).reshape(batch, -1, height, width)))


def _staged(model: Visformer) -> Visformer:
    """The model itself, every patch embedding that reads a feature map rather than the image made
    :class:`StagePatchEmbed` (a container): no new parameters, the keys stay the ANN's."""
    for index, name in enumerate(("patch_embed1", "patch_embed2", "patch_embed3")):
        embed = getattr(model, name)
        if isinstance(embed, PatchEmbed) and (index > 0 or model.stem is not None):
            embed.__class__ = StagePatchEmbed
    return model


def _block_paths(model: Visformer) -> list[str]:
    """The blocks of ``stage1``, ``stage2`` and ``stage3`` in turn."""
    return [f"stage{s}.{b}" for s in (1, 2, 3) for b in range(len(getattr(model, f"stage{s}")))]


register(Attention, Role.CONTAINER, twin=ExplicitMapAttention)
# the stem's (or the first patch embedding's) convolution reads the image
register(Visformer, Role.INPUT, twin=_staged, links=to_head, blocks=_block_paths)
for cls in (ExplicitMapAttention, Block, SpatialMlp):
    register(cls, Role.CONTAINER)
