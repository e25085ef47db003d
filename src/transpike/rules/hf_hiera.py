"""Rules for transformers' Hiera classifier (``HieraForImageClassification``: Hiera-T to H), on the
logits form of :mod:`.hf_vit`; the architecture is timm's (:mod:`.timm_hiera`, which describes
it), in transformers' layout.

The patch embedding (whose convolution reads the image) and the position embeddings (a constant)
give tokens that ``unroll`` permutes (linear); each stage's layers attend within mask units or
globally, q max-pooled over the stride where a stage begins (timm's attention twin), and the
layer's residual, projected to the new width, max-pooled the same way (:class:`StrideMax`, an EC
module). The pooler is the mean of the tokens and a LayerNorm (an EC module), the classifier a
Linear; one rate link runs from the patch embedding to it.
"""

from __future__ import annotations

from torch import Tensor, nn
from transformers.models.hiera import modeling_hiera as hiera

from . import Role, register
from .hf_vit import _Logits, register_classifiers, register_family
from .timm_hiera import ExplicitMaskUnitAttention, StrideMax


class ExplicitHFMaskUnitAttention(ExplicitMaskUnitAttention):
    """transformers' ``HieraMaskUnitAttention``: timm's twin under transformers' names; returns
    (output, None), as the layers ask for no attention weights."""

    names = ("num_heads", "hidden_size_output", "query_stride")

    def forward(self, hidden_states: Tensor, output_attentions: bool = False) -> tuple[Tensor, None]:
        return super().forward(hidden_states), None


class ExplicitHFHieraLayer(nn.Module):
    """transformers' ``HieraLayer`` with the pooling of its residual a module (after the projection
    to a wider stage, a max over q's stride). Shares the original's submodules under their names."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layernorm_before, self.attn = layer.layernorm_before, layer.attn
        self.proj = getattr(layer, "proj", None)  # only where the layer widens the tokens
        # a stage that widens without pooling (stride 1) takes the maximum of one: no module
        widens_and_pools = self.proj is not None and layer.query_stride > 1
        self.pool = StrideMax(layer.query_stride, 1) if widens_and_pools else nn.Identity()
        self.drop_path, self.layernorm_after, self.mlp = layer.drop_path, layer.layernorm_after, layer.mlp

    def forward(self, hidden_states: Tensor, output_attentions: bool = False) -> tuple[Tensor, None]:
        normed = self.layernorm_before(hidden_states)
        if self.proj is not None:
            hidden_states = self.pool(self.proj(normed))
        hidden_states = hidden_states + self.drop_path(self.attn(normed)[0])
        return hidden_states + self.drop_path(self.mlp(self.layernorm_after(hidden_states))), None


class HieraLogits(_Logits, hiera.HieraForImageClassification):
    staged, stage_layers = True, "layers"

    def tokens(self, pixel_values: Tensor) -> Tensor:
        """The embeddings, unrolled, then the stages: the last stage's tokens."""
        backbone = self.hiera
        embedded, shape = backbone.embeddings(pixel_values)[0], tuple(pixel_values.shape[-2:])
        stride, schedule = self.config.patch_stride, backbone.unroll_schedule
        unrolled = hiera.unroll(embedded, image_shape=shape, patch_stride=stride, schedule=schedule)
        return backbone.encoder(unrolled, return_dict=False)[0]

    def readout(self, tokens: Tensor) -> Tensor:
        """The classifier on the LayerNorm of the tokens' mean (the pooler)."""
        return self.classifier(self.hiera.pooler(tokens))


register_classifiers({hiera.HieraForImageClassification: HieraLogits})
register_family(hiera, {"MaskUnitAttention": ExplicitHFMaskUnitAttention, "HieraLayer": ExplicitHFHieraLayer})
for cls in (hiera.HieraMlp, ExplicitHFMaskUnitAttention, ExplicitHFHieraLayer):  # names no CONTAINERS ends
    register(cls, Role.CONTAINER)
