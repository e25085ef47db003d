"""Rules for transformers' LeViT classifiers (``LevitForImageClassification`` and the distilled
``LevitForImageClassificationWithTeacher``: LeViT-128S to 384), on the logits form of
:mod:`.hf_vit`, as timm's LeViT converts (:mod:`.timm_levit`).

LeViT normalizes with BatchNorm after every Linear or convolution (affine in evaluation) and uses
Hardswish, an EC module, in its stem, its MLPs and before each attention's projection. Its
attention splits q, k and v per head with v wider than q and k, and adds a learned bias per head
and relative offset to the scores, gathered from parameters by a constant index: a constant.
Between stages, an attention takes its queries from a subsampled grid (a strided selection:
linear) and its keys and values from the full one. Every layer is a residual sum (the residual
layer) around an attention or an MLP; ``blocks=k`` counts the attention layers but the subsampling
ones, each with the MLP after it, as timm's rule does.
"""

from __future__ import annotations

from torch import Tensor, nn
from transformers.models.levit import modeling_levit as levit

from . import Role, register
from .hf_vit import _Logits, register_classifiers, register_family
from .timm_twins import SoftmaxHeads


class ExplicitHFLevitAttention(SoftmaxHeads):
    """transformers' ``LevitAttention`` or ``LevitAttentionSubsample`` with Q·Kᵀ, softmax and attn·V
    as modules: softmax(q·kᵀ·scale + bias)·v per head, Hardswish, the projection. Shares the
    original's projections and attention biases under their names."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.num_attention_heads, self.key_dim = attn.num_attention_heads, attn.key_dim
        self.value_dim = attn.attention_ratio * attn.key_dim
        self.downsampling = hasattr(attn, "queries_subsample")
        if self.downsampling:  # queries from the subsampled grid
            self.keys_values, self.queries_subsample, self.queries = (
                attn.keys_values,
                attn.queries_subsample,
                attn.queries,
            )
        else:
            self.queries_keys_values = attn.queries_keys_values
        self.activation, self.projection = attn.activation, attn.projection
        self.attention_biases = attn.attention_biases
        self.register_buffer("attention_bias_idxs", attn.attention_bias_idxs, persistent=False)
        self._init_heads(attn)

    def per_head(self, tokens: Tensor) -> Tensor:
        """[B, N, C] (each head's channels together) to [B, heads, N, C / heads]."""
        return tokens.unflatten(2, (self.num_attention_heads, -1)).transpose(1, 2)

    def forward(self, hidden_state: Tensor) -> Tensor:
        if self.downsampling:
            k, v = self.per_head(self.keys_values(hidden_state)).split([self.key_dim, self.value_dim], dim=-1)
            q = self.per_head(self.queries(self.queries_subsample(hidden_state)))
        else:
            qkv = self.per_head(self.queries_keys_values(hidden_state))
            q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        heads = self.heads(q, k, v, self.attention_biases[:, self.attention_bias_idxs])
        return self.projection(self.activation(heads.transpose(1, 2).flatten(2)))


class _LevitForm(_Logits):
    def tokens(self, pixel_values: Tensor) -> Tensor:
        """The stem's convolutions, then the stages."""
        return self.levit.encoder(self.levit.patch_embeddings(pixel_values), return_dict=False)[0]

    def block_paths(self) -> list[str]:
        """The residual layers around an attention that does not subsample."""
        return [
            path
            for path, layer in self.named_modules()
            if isinstance(layer, levit.LevitResidualLayer) and isinstance(layer.module, levit.LevitAttention)
        ]


class LevitLogits(_LevitForm, levit.LevitForImageClassification):
    def readout(self, tokens: Tensor) -> Tensor:
        """The classifier (a BatchNorm and a Linear) on the mean of the tokens."""
        return self.classifier(tokens.mean(1))


class LevitWithTeacherLogits(_LevitForm, levit.LevitForImageClassificationWithTeacher):
    def readout(self, tokens: Tensor) -> Tensor:
        """The mean of the two classifiers' logits on the mean of the tokens."""
        pooled = tokens.mean(1)
        return (self.classifier(pooled) + self.classifier_distill(pooled)) / 2


register_classifiers(
    {
        levit.LevitForImageClassification: LevitLogits,
        levit.LevitForImageClassificationWithTeacher: LevitWithTeacherLogits,
    }
)
register_family(
    levit, {"Attention": ExplicitHFLevitAttention, "AttentionSubsample": ExplicitHFLevitAttention}
)
register(ExplicitHFLevitAttention, Role.CONTAINER)
