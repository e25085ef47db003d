"""Rules for transformers' PVT, PVT v2 and SegFormer classifiers (``PvtForImageClassification``,
``PvtV2ForImageClassification``, ``SegformerForImageClassification``: MiT-b0 … b5), on the twins
and the logits form of :mod:`.hf_vit`.

All three are pyramids of stages (an overlapping patch embedding, a strided convolution and a LayerNorm,
then the layers, then a LayerNorm) whose attention is spatial-reduction attention (Wang et al.
2021, PVT v2 eq. 1): q reads every token, k and v a reduced set, the tokens as a map through a
strided convolution and a LayerNorm (PVT v2's linear variant: an average pool to 7×7, a 1×1
convolution, a LayerNorm and GELU). The convolution is a weight layer reading the same spiking
tokens q does, the LayerNorm and GELU are EC modules, so k and v read rates like any other weight
layer. The feed-forward is Mix-FFN, fc1, a depthwise 3×3 convolution, the activation, fc2: weight
layers and an EC module. The classifier reads the mean of the last stage's tokens.

PVT (v1, Wang et al. 2021) differs in three linear places: each stage's patch embedding is a
non-overlapping strided convolution, a LayerNorm and learned position embeddings (resized to the
grid, a constant), the last stage adds a class token, which the classifier reads after a final
LayerNorm; and its feed-forward is a plain MLP.

PVT's and PVT v2's self-attention is in transformers' earlier layout (``query``, ``key``, ``value``;
PVT v2's ``proj`` in the same module, PVT's output projection a sibling); SegFormer's is in the
present one (``q_proj`` … ``o_proj``, the reduction a module of its own, the attention function
chosen by the configuration).
"""

from __future__ import annotations

from torch import Tensor, nn
from transformers.models.pvt import modeling_pvt as pvt
from transformers.models.pvt_v2 import modeling_pvt_v2 as pvt_v2
from transformers.models.segformer import modeling_segformer as segformer

from . import Role, register
from .hf_vit import ExplicitHFAttention, _Logits, register_classifiers, register_family


class ExplicitPvtAttention(ExplicitHFAttention):
    """PVT's and PVT v2's self-attention: q from ``query`` on the tokens, k and v from ``key`` and
    ``value`` on the reduced tokens (:meth:`reduced`), each head softmax(q·kᵀ/√d)·v, then PVT v2's
    ``proj`` (PVT's output projection is the sibling ``output.dense``)."""

    projections = ("query", "key", "value")
    #: the reduction's convolution: PVT v2's name, PVT's
    reductions = ("spatial_reduction", "sequence_reduction")

    def __init__(self, attn: nn.Module) -> None:
        super().__init__(attn, scale=attn.attention_head_size**-0.5)
        self.linear_attention = getattr(attn, "linear_attention", False)
        for name in ("pool", *self.reductions, "layer_norm", "act", "proj", "proj_drop"):
            if hasattr(attn, name):
                setattr(self, name, getattr(attn, name))

    def forward(
        self, hidden_states: Tensor, height: int, width: int, output_attentions: bool = False
    ) -> tuple[Tensor]:
        heads = self.attend(hidden_states, None, self.reduced(hidden_states, height, width))
        return (self.proj_drop(self.proj(heads)),) if hasattr(self, "proj") else (heads,)

    def reduced(self, tokens: Tensor, height: int, width: int) -> Tensor:
        """The tokens k and v read: LayerNorm(conv(map)), GELU(LayerNorm(conv(pool(map)))) in PVT
        v2's linear variant, or the tokens themselves where the stage reduces nothing."""
        reduction = next((getattr(self, name) for name in self.reductions if hasattr(self, name)), None)
        if reduction is None:
            return tokens
        grid = tokens.transpose(1, 2).unflatten(-1, (height, width))
        if self.linear_attention:
            grid = self.pool(grid)
        reduced = self.layer_norm(reduction(grid).flatten(2).transpose(1, 2))
        return self.act(reduced) if self.linear_attention else reduced


class ExplicitSegformerAttention(ExplicitHFAttention):
    """SegFormer's attention: the heads of :class:`ExplicitHFAttention` with k and v from the
    tokens its ``sequence_reduction`` module (a strided convolution and a LayerNorm) reduces."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__(attn)
        if attn.sequence_reduction_ratio > 1:
            self.sequence_reduction = attn.sequence_reduction

    def forward(
        self, hidden_states: Tensor, height: int, width: int, attention_mask: Tensor | None = None, **_
    ) -> tuple[Tensor, None]:
        keys_from = hidden_states
        if hasattr(self, "sequence_reduction"):
            keys_from = self.sequence_reduction(hidden_states, height, width)
        bias = self.scores_bias(attention_mask, hidden_states.shape[0])  # none: no masks
        heads = self.attend(hidden_states, bias, keys_from)
        return self.o_proj(heads), None


class _StageMean(_Logits):
    staged = True

    def readout(self, grid: Tensor) -> Tensor:
        """The classifier on the mean of the last stage's tokens (its map's positions)."""
        tokens = grid.permute(0, 2, 3, 1) if grid.dim() == 4 else grid
        return self.classifier(tokens.reshape(grid.shape[0], -1, self.config.hidden_sizes[-1]).mean(dim=1))


class PvtLogits(_Logits, pvt.PvtForImageClassification):
    staged, stage_layers = True, None

    def tokens(self, pixel_values: Tensor) -> Tensor:
        """The stages and the final LayerNorm; the classifier reads the class token."""
        return self.pvt.encoder(pixel_values, return_dict=False)[0]


class PvtV2Logits(_StageMean, pvt_v2.PvtV2ForImageClassification):
    def tokens(self, pixel_values: Tensor) -> Tensor:
        """The stages (each returns its tokens as a map for the next)."""
        return self.pvt_v2.encoder(pixel_values, return_dict=False)[0]


class SegformerLogits(_StageMean, segformer.SegformerForImageClassification):
    def tokens(self, pixel_values: Tensor) -> Tensor:
        """The stages (each but the last, unless ``reshape_last_stage``, returns a map)."""
        hidden = pixel_values
        for stage in self.segformer.stages:
            hidden = stage(hidden)
        return hidden


register_classifiers(
    {
        pvt.PvtForImageClassification: PvtLogits,
        pvt_v2.PvtV2ForImageClassification: PvtV2Logits,
        segformer.SegformerForImageClassification: SegformerLogits,
    }
)
register_family(pvt, {"EfficientSelfAttention": ExplicitPvtAttention})
register_family(pvt_v2, {"SelfAttention": ExplicitPvtAttention})
register_family(segformer, {"Attention": ExplicitSegformerAttention})
for cls in (ExplicitPvtAttention, ExplicitSegformerAttention):
    register(cls, Role.CONTAINER)
