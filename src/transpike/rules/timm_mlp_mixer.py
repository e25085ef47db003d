"""Rules for timm's all-MLP token mixers (``MlpMixer``): MLP-Mixer (``mixer_*``, and ``gmixer_*``
with GLU MLPs), ResMLP (``resmlp_*``) and gMLP (``gmlp_*``).

They are ViTs whose attention is a weight layer over the tokens: the token-mixing MLP (Mixer) or
Linear (ResMLP) reads the normed tokens transposed, so its MT neuron sits on the tokens as channels,
like every weight layer's. ResMLP's Affine "norm" (α·x + β) and its LayerScale factors are linear;
gMLP's spatial gating unit multiplies one half of the channels by a Linear over the tokens of the
other, normed half: a product of two spiking operands with its EC (:class:`SpatialGating`). The
patch embedding reads the image; between converted modules the model only sums, transposes and
averages, so one rate link runs from the patch embedding to the head.
"""

from __future__ import annotations

from timm.layers.mlp import GatedMlp
from timm.models import mlp_mixer
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import to_head


class SpatialGating(nn.Module):
    """timm's ``SpatialGatingUnit`` (Liu et al. 2021, "Pay Attention to MLPs", eq. 3-4) with its
    product a module: u ⊙ (W·norm(v) + b), W mixing the tokens, for the channel halves u and v.
    Shares the original's ``norm`` and ``proj``."""

    def __init__(self, unit: mlp_mixer.SpatialGatingUnit) -> None:
        super().__init__()
        self.norm, self.proj = unit.norm, unit.proj
        self.gating = Product("mul", 1.0, channels_a=(-1,), channels_b=(-1,))

    def forward(self, x: Tensor) -> Tensor:
        u, v = x.chunk(2, dim=-1)
        return self.gating(u, self.proj(self.norm(v).transpose(-1, -2)).transpose(-1, -2))


register(mlp_mixer.SpatialGatingUnit, Role.CONTAINER, twin=SpatialGating)
register(mlp_mixer.MlpMixer, Role.CONTAINER, links=to_head)
register(mlp_mixer.Affine, Role.PASSTHROUGH)  # α·x + β
for cls in (SpatialGating, GatedMlp, mlp_mixer.MixerBlock, mlp_mixer.ResBlock, mlp_mixer.SpatialGatingBlock):
    register(cls, Role.CONTAINER)
