"""Rules for transformers' FocalNet classifier (``FocalNetForImageClassification``: small and large
receptive fields, the ``fl3``/``fl4`` models with post-norms and LayerScale), on the logits form of
:mod:`.hf_vit`; the architecture is timm's (:mod:`.timm_focalnet`, which describes it), in
transformers' layout.

transformers runs focal modulation on channels-last maps [B, H, W, C]: q, the context and the
gates come from a Linear and are moved to [B, C, H, W] for the context levels (depthwise
convolutions with GELU), the products (each context × gate and q × the 1×1 convolution of their
sum, products of two spiking operands with their EC: timm's twin's :class:`.FocalProducts`) and
back, then the optional LayerNorm and the output Linear. Between layers run tokens [B, H·W, C]:
LayerNorms (EC modules), LayerScale (linear), and each stage's closing patch embedding (padding, a
strided convolution, a LayerNorm). The first patch embedding's convolution reads the image; the
classifier reads the mean of the final LayerNorm's tokens.
"""

from __future__ import annotations

from torch import Tensor, nn
from transformers.models.focalnet import modeling_focalnet as focalnet

from . import Role, register
from .hf_vit import _Pooled, register_classifiers, register_family
from .timm_focalnet import FocalProducts


class ExplicitHFFocalModulation(FocalProducts):
    """transformers' ``FocalNetModulation`` on channels-last maps with its products as modules.
    Shares the original's submodules under their names."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module.focal_level, module.normalize_modulator)
        self.input_split = (module.dim, module.dim, module.focal_level + 1)
        self.projection_in, self.focal_layers = module.projection_in, module.focal_layers
        self.activation, self.projection_context = module.activation, module.projection_context
        self.layernorm = getattr(module, "layernorm", nn.Identity())  # only with post-LayerNorms
        self.projection_out, self.projection_dropout = module.projection_out, module.projection_dropout

    def forward(self, hidden_state: Tensor) -> Tensor:
        maps = self.projection_in(hidden_state).permute(0, 3, 1, 2)
        q, ctx, gates = maps.split(self.input_split, 1)
        modulated = self.modulate(q, ctx, gates, self.activation, self.projection_context)
        return self.projection_dropout(self.projection_out(self.layernorm(modulated.permute(0, 2, 3, 1))))


class FocalNetLogits(_Pooled, focalnet.FocalNetForImageClassification):
    stage_layers = "layers"

    def tokens(self, pixel_values: Tensor) -> Tensor:
        """Embeddings (the first patch embedding and its LayerNorm), the stages (each a list of
        layers, then a patch embedding but in the last), the final LayerNorm."""
        backbone = self.focalnet
        return backbone.layernorm(backbone.encoder(*backbone.embeddings(pixel_values), return_dict=False)[0])


register_classifiers({focalnet.FocalNetForImageClassification: FocalNetLogits})
register_family(focalnet, {"Modulation": ExplicitHFFocalModulation})
for cls in (focalnet.FocalNetMlp, ExplicitHFFocalModulation):  # names none of hf_vit's CONTAINERS ends
    register(cls, Role.CONTAINER)
