"""Rules for transformers' BEiT and Data2Vec-vision classifiers (``BeitForImageClassification``,
``Data2VecVisionForImageClassification``; BEiT v1 and v2 checkpoints alike), on the twins and the
logits form of :mod:`.hf_vit`.

A BEiT is a pre-norm ViT whose attention adds a relative position bias to its scores, per layer, or
one table the model shares among its layers, and whose layers scale their branches by LayerScale
vectors (``lambda_1``, ``lambda_2``). The bias is computed from a parameter table alone, the same at
every step: added to the scores, it shifts their rate by itself (as Swin's does), and its module is
a constant. The classifier reads the LayerNorm of the mean of the patch tokens (``use_mean_pooling``,
the checkpoints' setting) or the class token after a final LayerNorm.

Data2Vec-vision is BEiT's architecture in transformers' earlier layout: a self-attention module
with ``query``, ``key`` and ``value`` (eager or SDPA by class), the output projection beside it, the
relative position bias module inside it. BEiT's attention is in the present layout (``q_proj`` ...
``o_proj``); its layer hands the bias to the attention as the ``attention_mask``.
"""

from __future__ import annotations

from torch import Tensor, nn
from transformers.models.beit import modeling_beit as beit
from transformers.models.data2vec import modeling_data2vec_vision as data2vec

from . import Role, register
from .hf_vit import ExplicitHFAttention, _Logits, register_classifiers, register_family


class ExplicitBeitAttention(ExplicitHFAttention):
    """BEiT's attention: the heads of :class:`ExplicitHFAttention` with the relative position bias
    added to the scores. BEiT's layer passes the bias (its own, the model's shared one, or their sum)
    as ``attention_mask``: a constant; the logits form passes no mask of its own."""

    def scores_bias(self, attention_mask: Tensor | None, batch: int) -> Tensor | None:
        return attention_mask


class ExplicitData2VecAttention(ExplicitHFAttention):
    """Data2Vec-vision's self-attention (eager and SDPA): q, k, v from ``query``, ``key``,
    ``value``, each head softmax(q·kᵀ/√d + bias)·v with the bias its own relative position bias,
    the shared one the encoder passes, or both; returns (heads,), as its output projection is the
    sibling ``output.dense``."""

    projections = ("query", "key", "value")

    def __init__(self, attn: nn.Module) -> None:
        super().__init__(attn, scale=attn.attention_head_size**-0.5)
        self.patch_size = attn.config.patch_size
        if attn.has_relative_position_bias:
            self.relative_position_bias = attn.relative_position_bias

    def forward(
        self,
        hidden_states: Tensor,
        output_attentions: bool = False,
        relative_position_bias: Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        resolution: tuple[int, int] | None = None,
    ) -> tuple[Tensor]:
        bias = relative_position_bias  # the encoder's shared one, or None
        if hasattr(self, "relative_position_bias"):
            window = tuple(side // self.patch_size for side in resolution)
            own = self.relative_position_bias(
                window, interpolate_pos_encoding, dim_size=hidden_states.shape[1]
            )
            bias = own if bias is None else own + bias
        return (self.attend(hidden_states, bias),)


class _PoolerReadout(_Logits):
    def readout(self, tokens: Tensor) -> Tensor:
        """The classifier on the pooler's output: the LayerNorm of the patch tokens' mean, or the
        class token."""
        return self.classifier(getattr(self, self.backbone_name).pooler(tokens))


class BeitLogits(_PoolerReadout, beit.BeitForImageClassification):
    def tokens(self, pixel_values: Tensor) -> Tensor:
        """Embeddings, the layers (each given the image's size for its relative position bias, and
        the shared bias where the model has one), the final norm (an identity under mean pooling)."""
        backbone = self.beit
        hidden, resolution = backbone.embeddings(pixel_values), tuple(pixel_values.shape[2:])
        shared = None
        if backbone.shared_position_bias is not None:
            window = tuple(side // self.config.patch_size for side in resolution)
            shared = backbone.shared_position_bias(window, dim_size=hidden.shape[1])
        for layer in backbone.layers:
            hidden = layer(hidden, attention_mask=shared, resolution=resolution)  # by name: a constant
        return backbone.layernorm(hidden)


class Data2VecVisionLogits(_PoolerReadout, data2vec.Data2VecVisionForImageClassification):
    def tokens(self, pixel_values: Tensor) -> Tensor:
        """Embeddings, the encoder (its layers, with the shared bias where there is one), the final
        norm."""
        backbone = self.data2vec_vision
        hidden = backbone.embeddings(pixel_values)[0]
        hidden = backbone.encoder(hidden, resolution=tuple(pixel_values.shape[2:]), return_dict=False)[0]
        return backbone.layernorm(hidden)


register_classifiers(
    {
        beit.BeitForImageClassification: BeitLogits,
        data2vec.Data2VecVisionForImageClassification: Data2VecVisionLogits,
    }
)
register_family(beit, {"Attention": ExplicitBeitAttention})
register_family(data2vec, {"SelfAttention": ExplicitData2VecAttention})
for cls in (beit.BeitRelativePositionBias, data2vec.Data2VecVisionRelativePositionBias):
    register(cls, Role.CONSTANT)  # reads its table only
for cls in (ExplicitBeitAttention, ExplicitData2VecAttention):
    register(cls, Role.CONTAINER)
