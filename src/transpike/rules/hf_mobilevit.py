"""Rules for transformers' MobileViT and MobileViT v2 classifiers (``MobileViTForImageClassification``,
``MobileViTV2ForImageClassification``), on the logits form of :mod:`.hf_vit`; the architecture is
timm's (:mod:`.timm_mobilevit`, which describes it), in transformers' layout.

MobileViT's transformer layers attend with softmax attention in transformers' earlier layout
(``query``, ``key``, ``value``; the output projection a sibling module), across the patches at
each pixel position of a patch; MobileViT v2's separable self-attention is the same module as
timm's and gets timm's twin. Between them run inverted residuals (convolutions, BatchNorm, SiLU),
unfolding and folding, concatenation and, where the patch does not divide the map, a bilinear
resize, all linear but the EC modules. The classifier reads the mean of the last map (after v1's
1×1 expansion).
"""

from __future__ import annotations

from torch import Tensor, nn
from transformers.models.mobilevit import modeling_mobilevit as mobilevit
from transformers.models.mobilevitv2 import modeling_mobilevitv2 as mobilevitv2

from . import Role, register
from .hf_vit import ExplicitHFAttention, _Logits, register_classifiers, register_family
from .timm_mobilevit import ExplicitLinearSelfAttention


class ExplicitMobileViTAttention(ExplicitHFAttention):
    """MobileViT's self-attention: q, k, v from ``query``, ``key``, ``value``, each head
    softmax(q·kᵀ/√d)·v; returns the heads side by side, as the output projection is the sibling
    ``output.dense``."""

    projections = ("query", "key", "value")

    def __init__(self, attn: nn.Module) -> None:
        super().__init__(attn, scale=attn.attention_head_size**-0.5)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.attend(hidden_states, None)


class _MobileViTForm(_Logits):
    def tokens(self, pixel_values: Tensor) -> Tensor:
        """The stem, the encoder's layers and, in v1, the 1×1 expansion: the last map."""
        backbone = getattr(self, self.backbone_name)
        features = backbone.encoder(backbone.conv_stem(pixel_values), return_dict=False)[0]
        return backbone.conv_1x1_exp(features) if hasattr(backbone, "conv_1x1_exp") else features

    def readout(self, features: Tensor) -> Tensor:
        """The classifier on the map's mean (v1's dropout before it an identity in evaluation)."""
        return self.classifier(features.mean(dim=(-2, -1)))

    def block_paths(self) -> list[str]:
        """The encoder's inverted residuals one by one, each MobileViT layer (its downsampling
        residual, convolutions and transformer) as one."""
        prefix, paths = f"{self.backbone_name}.encoder.layer", []
        for index, layer in enumerate(getattr(self, self.backbone_name).encoder.layer):
            inner = getattr(layer, "layer", None)  # a MobileNet layer's list of inverted residuals
            paths += (
                [f"{prefix}.{index}"]
                if inner is None
                else [f"{prefix}.{index}.layer.{j}" for j in range(len(inner))]
            )
        return paths


class MobileViTLogits(_MobileViTForm, mobilevit.MobileViTForImageClassification):
    pass


class MobileViTV2Logits(_MobileViTForm, mobilevitv2.MobileViTV2ForImageClassification):
    pass


register_classifiers(
    {
        mobilevit.MobileViTForImageClassification: MobileViTLogits,
        mobilevitv2.MobileViTV2ForImageClassification: MobileViTV2Logits,
    }
)
register_family(mobilevit, {"SelfAttention": ExplicitMobileViTAttention})
register_family(mobilevitv2, {"LinearSelfAttention": ExplicitLinearSelfAttention})
# containers whose names end in none of hf_vit's CONTAINERS
for cls in (
    mobilevit.MobileViTInvertedResidual,
    mobilevit.MobileViTTransformer,
    mobilevitv2.MobileViTV2InvertedResidual,
    mobilevitv2.MobileViTV2Transformer,
):
    register(cls, Role.CONTAINER)
register(ExplicitMobileViTAttention, Role.CONTAINER)
