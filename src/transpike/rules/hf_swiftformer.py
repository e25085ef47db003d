"""Rules for transformers' SwiftFormer classifier (``SwiftFormerForImageClassification``: XS, S,
L1, L3), on the logits form of :mod:`.hf_vit`; the architecture is timm's (:mod:`.timm_swiftformer`,
which describes it), in transformers' layout.

transformers' efficient additive attention runs on tokens and differs from timm's in one place: it
takes the token scores q̂·w_g/√d through a softmax over their last dimension, which has size 1, so
every score is 1 and the global query is the sum of q̂ over the tokens; timm L2-normalizes the
scores over the tokens. The twin computes transformers' function: its softmax an EC module (of a
one-element row, so always 1), then the same two products as timm's. The stages' convolution
encoders and local representations scale their branches by LayerScale parameters (linear); the
classifier averages its two heads on the mean of the BatchNorm of the last map.
"""

from __future__ import annotations

from torch import Tensor, nn
from transformers.models.swiftformer import modeling_swiftformer as swiftformer

from . import Role, register
from .hf_vit import _Logits, register_classifiers, register_family
from .timm_swiftformer import ExplicitAdditiveAttention


class ExplicitHFAdditiveAttention(ExplicitAdditiveAttention):
    """transformers' ``SwiftFormerEfficientAdditiveAttention`` on tokens [B, N, D]: timm's twin with
    the scores through a softmax over their last dimension, as transformers computes them."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__(attn)
        self.score_norm = nn.Softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.attend(x)


class SwiftFormerLogits(_Logits, swiftformer.SwiftFormerForImageClassification):
    def tokens(self, pixel_values: Tensor) -> Tensor:
        """The stem, the stages and the embeddings between them: the last map."""
        return self.swiftformer.encoder(self.swiftformer.patch_embed(pixel_values), return_dict=False)[0]

    def readout(self, features: Tensor) -> Tensor:
        """The mean of the two heads on the mean of the BatchNorm of the map."""
        pooled = self.norm(features).flatten(2).mean(-1)
        return (self.head(pooled) + self.dist_head(pooled)) / 2

    def block_paths(self) -> list[str]:
        """Every block of every stage in turn (convolution encoders, then the attention block)."""
        network = self.swiftformer.encoder.network
        return [
            f"swiftformer.encoder.network.{index}.blocks.{block}"
            for index, stage in enumerate(network)
            if hasattr(stage, "blocks")
            for block in range(len(stage.blocks))
        ]


register_classifiers({swiftformer.SwiftFormerForImageClassification: SwiftFormerLogits})
register_family(swiftformer, {"EfficientAdditiveAttention": ExplicitHFAdditiveAttention})
# containers whose names end in none of hf_vit's CONTAINERS
for cls in (
    swiftformer.SwiftFormerPatchEmbedding,
    swiftformer.SwiftFormerConvEncoder,
    swiftformer.SwiftFormerLocalRepresentation,
    swiftformer.SwiftFormerEncoderBlock,
    swiftformer.SwiftFormerMlp,
    ExplicitHFAdditiveAttention,
):
    register(cls, Role.CONTAINER)
