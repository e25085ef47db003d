"""Rules for timm's SwiftFormer (Shaker et al. 2023, "SwiftFormer: Efficient Additive Attention
for Transformer-based Real-time Mobile Vision Applications").

Its attention is additive: q and k are L2-normalized per token (EC modules); one score per token,
q·w_g (a learned vector: linear float work on q) scaled and L2-normalized over the tokens (an EC
module); the global query Σ_N score·q (a product of two spiking operands, then a sum) multiplies
every key (a second product, broadcast over the tokens), then a projection, plus q, and a final
Linear. The other blocks are convolutions with BatchNorm and GELU (EC modules) and LayerScale,
linear. The stem's first convolution reads the image; the two heads (classifier and distillation)
are averaged, linear, so one rate link runs from the stem to both.
"""

from __future__ import annotations

from timm.layers.linear import Linear
from timm.models import swiftformer as swift
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import link_all
from .timm_twins import L2Normalize


class ExplicitAdditiveAttention(nn.Module):
    """timm's ``EfficientAdditiveAttention`` on [B, C, H, W] with its normalizations and products
    as modules (Shaker et al. 2023, eq. 4-6): q̂ = q/‖q‖, k̂ = k/‖k‖ per token; α = normalize_N(q̂·w_g
    / √d); g = Σ_N α·q̂; out = final(proj(g ⊙ k̂) + q̂). Shares the original's submodules and
    parameters under their names."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.scale_factor = attn.scale_factor
        self.to_query, self.to_key, self.w_g = attn.to_query, attn.to_key, attn.w_g
        self.query_norm, self.key_norm, self.score_norm = L2Normalize(-1), L2Normalize(-1), L2Normalize(1)
        # operands [B, N, 1] (α) and [B, N, D] (q̂), then [B, 1, D] (g) and [B, N, D] (k̂)
        self.pooling = Product("mul", channels_a=(-1,), channels_b=(-1,))
        self.gating = Product("mul", channels_a=(-1,), channels_b=(-1,))
        self.proj, self.final = attn.proj, attn.final

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        out = self.attend(x.flatten(2).transpose(1, 2))
        return out.transpose(1, 2).reshape(batch, -1, height, width)

    def attend(self, tokens: Tensor) -> Tensor:
        """The attention on tokens [B, N, D]."""
        query, key = self.query_norm(self.to_query(tokens)), self.key_norm(self.to_key(tokens))
        score = self.score_norm(query @ self.w_g * self.scale_factor)
        pooled = self.pooling(score, query).sum(dim=1, keepdim=True)
        return self.final(self.proj(self.gating(pooled, key)) + query)


def _links(model: swift.SwiftFormer) -> list:
    """One link from the stem to both heads; none for a headless model (its output is a sum)."""
    return [] if isinstance(model.head, nn.Identity) else link_all(model, "head", "head_dist")


register(swift.EfficientAdditiveAttention, Role.CONTAINER, twin=ExplicitAdditiveAttention)
register(Linear, Role.WEIGHT, channel_dims=(-1,))  # timm's Linear: nn.Linear, cast for TorchScript
register(swift.SwiftFormer, Role.INPUT, links=_links)  # the stem's first convolution reads the image
register(swift.LayerScale2d, Role.PASSTHROUGH)
for cls in (
    ExplicitAdditiveAttention,
    swift.Embedding,
    swift.ConvEncoder,
    swift.Mlp,
    swift.LocalRepresentation,
    swift.Block,
    swift.Stage,
):
    register(cls, Role.CONTAINER)
