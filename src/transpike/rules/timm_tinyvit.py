"""Rules for timm's TinyViT (``TinyVit``: TinyViT-5M, 11M, 21M at 224 to 512 px; Wu et al. 2022,
"TinyViT: Fast Pretraining Distillation for Small Vision Transformers").

TinyViT opens with a convolution stage of MBConv blocks (1×1, depthwise 3×3 and 1×1 convolutions
with BatchNorm and GELU, a residual sum, a GELU after it), then stages of window-attention blocks
(TinyViT blocks: attention inside windows, a depthwise convolution with BatchNorm between the
attention and the MLP), with convolutional patch merging between stages. Its attention normalizes
its input itself (a LayerNorm, an EC module), splits q, k and v with v wider than q and k, and
adds a learned bias per head and relative offset to the scores: gathered from parameters by a
constant index, a constant. Convolutions and Linears are weight layers with MT neurons but for the
stem's first convolution, which reads the image; GELUs and norms become EC modules, BatchNorm in
evaluation is affine, and padding, window partition and their reverses are linear. One rate link
runs from the stem to the head's classifier. ``blocks=k`` counts every stage's blocks, MBConv
blocks included.
"""

from __future__ import annotations

from timm.models.tiny_vit import (
    Attention,
    ConvLayer,
    ConvNorm,
    MBConv,
    NormMlp,
    PatchEmbed,
    PatchMerging,
    TinyVit,
    TinyVitBlock,
    TinyVitStage,
)
from torch import Tensor, nn

from . import Role, register
from .links import whole_network
from .timm_twins import SoftmaxHeads


class ExplicitBiasedAttention(SoftmaxHeads):
    """timm's TinyViT or EfficientFormer ``Attention`` with Q·Kᵀ, softmax and attn·V as modules
    (timm may call one fused kernel). Shares the original's norm (TinyViT's; EfficientFormer's
    attention has none), qkv, proj and attention biases under their names."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim = attn.num_heads, attn.key_dim, attn.val_dim
        self.norm, self.qkv, self.proj = getattr(attn, "norm", nn.Identity()), attn.qkv, attn.proj
        self.attention_biases = attn.attention_biases
        # saved where the original saves it (EfficientFormer), so that the keys stay the ANN's
        persistent = "attention_bias_idxs" in attn.state_dict()
        self.register_buffer("attention_bias_idxs", attn.attention_bias_idxs, persistent=persistent)
        self._init_heads(attn)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, tokens, self.num_heads, -1)
        widths = [self.key_dim, self.key_dim, self.val_dim]
        q, k, v = (part.transpose(1, 2) for part in qkv.split(widths, dim=3))
        bias = self.attention_biases[:, self.attention_bias_idxs]  # [heads, tokens, tokens], a constant
        return self.proj(self.heads(q, k, v, bias).transpose(1, 2).reshape(batch, tokens, -1))


register(Attention, Role.CONTAINER, twin=ExplicitBiasedAttention)
register(TinyVit, Role.INPUT, links=whole_network)  # the stem's first convolution reads the image
for cls in (
    ExplicitBiasedAttention,
    ConvNorm,
    PatchEmbed,
    MBConv,
    ConvLayer,
    PatchMerging,
    NormMlp,
    TinyVitBlock,
    TinyVitStage,
):
    register(cls, Role.CONTAINER)
