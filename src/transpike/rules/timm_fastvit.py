"""Rules for timm's FastViT (``FastVit``: FastViT-T8 to MA36 and the MobileCLIP image towers
``fastvit_mci*``; Vasu et al. 2023, "FastViT: A Fast Hybrid Vision Transformer using Structural
Reparameterization").

A convolutional stem of MobileOne blocks, stages of RepMixer blocks (x + γ·(mixer(x) - norm(x)),
both MobileOne blocks without activation: linear) and, in the ``sa``/``ma``/``mci`` models,
attention blocks (BatchNorm, multi-head self-attention over the feature map's pixels), each with a
convolutional MLP (a depthwise convolution, 1×1 convolutions and GELU), conditional position
encodings (a depthwise convolution added to its input: linear) and large-kernel patch embeddings
between stages, then a final MobileOne block with squeeze-and-excitation. A MobileOne block sums
parallel branches (k×k convolutions with BatchNorm, a 1×1 one, a BatchNorm identity) before its
activation: in training form every branch's convolution reads the block's input, so in the stem's
first block every one of them reads the image (direct coding); once re-parameterized (timm's
``reparameterize_model``) one convolution does. Both forms convert. Convolutions and Linears are
weight layers with MT neurons, GELU and the attention's softmax EC modules, BatchNorm in
evaluation is affine. One rate link runs from the stem to the head's classifier. ``blocks=k``
counts every stage's blocks.
"""

from __future__ import annotations

from timm.models.fastvit import (
    Attention,
    AttentionBlock,
    ConvMlp,
    FastVit,
    FastVitStage,
    LayerScale2d,
    MobileOneBlock,
    PatchEmbed,
    ReparamLargeKernelConv,
    RepConditionalPosEnc,
    RepMixer,
    RepMixerBlock,
)
from torch import Tensor

from . import Role, register
from .links import whole_network
from .timm_twins import SoftmaxHeads, split_qkv


class ExplicitPixelAttention(SoftmaxHeads):
    """timm FastViT's ``Attention`` over the pixels of a [B, C, H, W] map with Q·Kᵀ, softmax and
    attn·V as modules (timm may call one fused kernel). Shares the original's qkv and proj."""

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.qkv, self.proj, self.proj_drop = attn.qkv, attn.proj, attn.proj_drop
        self._init_heads(attn)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(-2, -1)
        out = self.heads(*split_qkv(self.qkv(tokens), self.num_heads)).transpose(1, 2)
        out = self.proj_drop(self.proj(out.reshape(batch, height * width, channels)))
        return out.transpose(-2, -1).reshape(batch, channels, height, width)


class InputMobileOneBlock(MobileOneBlock):
    """timm ``MobileOneBlock`` opening the stem: it reads the image, with every branch."""


def _branches(block: MobileOneBlock) -> list[str]:
    """The convolutions of a MobileOne block that read its input: the re-parameterized one, or the
    scale branch's and every k×k branch's."""
    if block.reparam_conv is not None:
        return ["reparam_conv"]
    scale = ["conv_scale.conv"] if block.conv_scale is not None else []
    return scale + [f"conv_kxk.{i}.conv" for i in range(len(block.conv_kxk or ()))]


def _input_stem(fastvit: FastVit) -> FastVit:
    """The model itself, its stem's first block made :class:`InputMobileOneBlock` (no new
    parameters: the keys stay the ANN's)."""
    fastvit.stem[0].__class__ = InputMobileOneBlock
    return fastvit


register(Attention, Role.CONTAINER, twin=ExplicitPixelAttention)
register(InputMobileOneBlock, Role.INPUT, inputs=_branches)
register(FastVit, Role.CONTAINER, twin=_input_stem, links=whole_network)
for cls in (
    ExplicitPixelAttention,
    MobileOneBlock,
    ReparamLargeKernelConv,
    PatchEmbed,
    RepMixer,
    ConvMlp,
    RepConditionalPosEnc,
    RepMixerBlock,
    AttentionBlock,
    FastVitStage,
):
    register(cls, Role.CONTAINER)
register(LayerScale2d, Role.PASSTHROUGH)  # γ per channel: linear
