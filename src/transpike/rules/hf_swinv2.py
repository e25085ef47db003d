"""Rules for transformers' Swin Transformer V2 classifier (``Swinv2ForImageClassification``), on
the twins and the logits form of :mod:`.hf_vit`.

Swin V2 keeps Swin's windows, shifts, padding and patch merging (linear, the same at every step)
and, as timm's (:mod:`.timm_swinv2`), changes three things: cosine attention, τ_h·Q̂·K̂ᵀ with q and
k normalized to unit L2 norm per token (each normalization an EC module before the product's MT
neurons) and τ_h = exp(min(logit_scale_h, ln 100)) a constant per head; a continuous relative
position bias, 16·σ(MLP(log-spaced coordinates)), computed from parameters and buffers alone, a
constant whose MLP is not converted; and residual post-norm. The self-attention is in transformers'
earlier layout (``query``, ``key``, ``value``; the output projection a sibling module).
"""

from __future__ import annotations

from torch import Tensor, nn
from transformers.models.swinv2 import modeling_swinv2 as swinv2

from . import Role, register
from .hf_vit import ExplicitHFAttention, _Pooled, register_classifiers, register_family
from .timm_swin import with_mask
from .timm_swinv2 import ConstantMlp, position_bias, temperature
from .timm_twins import L2Normalize


class ExplicitSwinv2Attention(ExplicitHFAttention):
    """transformers' Swin V2 window self-attention: q, k, v from ``query``, ``key``, ``value``,
    softmax(τ·Q̂·K̂ᵀ + 16·σ(B̂) + mask)·v per head, with the normalizations of q and k modules.
    transformers adds the shifted windows' mask (0 or -100) twice; so does the twin. Returns
    (heads,), as the output projection is the sibling ``output.dense``."""

    projections = ("query", "key", "value")

    def __init__(self, attn: nn.Module) -> None:
        super().__init__(attn, scale=1.0)  # τ multiplies Q̂ instead
        self.q_norm, self.k_norm = L2Normalize(), L2Normalize()
        self.num_heads, self.logit_scale = attn.num_attention_heads, attn.logit_scale
        attn.continuous_position_bias_mlp.__class__ = ConstantMlp  # the same children: the ANN's keys
        self.continuous_position_bias_mlp = attn.continuous_position_bias_mlp
        self.register_buffer("relative_coords_table", attn.relative_coords_table, persistent=False)
        self.register_buffer("relative_position_index", attn.relative_position_index, persistent=False)

    def forward(
        self, hidden_states: Tensor, attention_mask: Tensor | None = None, output_attentions: bool = False
    ) -> tuple[Tensor]:
        return (self.attend(hidden_states, self.scores_bias(attention_mask, hidden_states.shape[0])),)

    def normed(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """τ·Q̂ and K̂ (Swin V2 eq. 2)."""
        return self.q_norm(q) * temperature(self.logit_scale), self.k_norm(k)

    def scores_bias(self, attention_mask: Tensor | None, windows: int) -> Tensor:
        """The continuous position bias gathered per pair of tokens, plus in shifted windows twice
        the layer's mask (one per window, repeated over the batch)."""
        mlp, index = self.continuous_position_bias_mlp, self.relative_position_index
        bias = position_bias(mlp, self.relative_coords_table, index, self.num_heads)
        return with_mask(bias, None if attention_mask is None else 2 * attention_mask, windows)


class Swinv2Logits(_Pooled, swinv2.Swinv2ForImageClassification):
    def tokens(self, pixel_values: Tensor) -> Tensor:
        """Embeddings (patches and their LayerNorm), the stages (each a list of layers, then patch
        merging but in the last, which halves the grid), the final LayerNorm."""
        hidden, grid = self.swinv2.embeddings(pixel_values)
        for stage in self.swinv2.encoder.layers:
            hidden, _, dimensions = stage(hidden, grid)  # dimensions: the grid before and after merging
            grid = dimensions[-2:]
        return self.swinv2.layernorm(hidden)


register_classifiers({swinv2.Swinv2ForImageClassification: Swinv2Logits})
register_family(swinv2, {"SelfAttention": ExplicitSwinv2Attention})
register(ExplicitSwinv2Attention, Role.CONTAINER)
