"""Rules for timm's FocalNet (Yang et al. 2022, "Focal Modulation Networks"; ``focalnet_*``, small
or large receptive fields, and the ``fl3``/``fl4`` models with post-norms and LayerScale).

Focal modulation replaces attention by products: from one 1×1 convolution come q, a context map
and L + 1 gates; each of L depthwise convolutions with GELU refines the context, which each level
adds weighted by its gate, and the mean of the last one (through GELU) adds weighted by the last
gate; q times a 1×1 convolution of the sum is the output (eq. 4-6). Every context × gate and q ×
modulator is a product of two spiking operands with its EC (:class:`ExplicitFocalModulation`); the
spatial mean, the sum and the optional 1 / (L + 1) are linear. LayerNorm2d norms and GELU are EC
modules, the stem's convolution reads the image, and one rate link runs from it to the head's
classifier.
"""

from __future__ import annotations

from timm.models import focalnet
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import whole_network


def _map_product() -> Product:
    """An elementwise product of [B, C, H, W] maps (a gate's C is 1: it broadcasts)."""
    return Product("mul", 1.0, channels_a=(-3,), channels_b=(-3,))


class FocalProducts(nn.Module):
    """The products of focal modulation as modules, shared by timm's and transformers' twins:
    ``gating[l]`` weighs level l's context by its gate (l = L: the global context), ``modulation``
    is q times the 1×1 convolution of their sum (:meth:`modulate`). Subclasses hold the model's
    ``focal_layers``."""

    def __init__(self, levels: int, normalize_modulator: bool) -> None:
        super().__init__()
        self.normalize_modulator = normalize_modulator
        self.gating = nn.ModuleList(_map_product() for _ in range(levels + 1))
        self.modulation = _map_product()

    def modulate(self, q: Tensor, ctx: Tensor, gates: Tensor, act: nn.Module, h: nn.Module) -> Tensor:
        """q · h(Σ_l gate_l · ctx_l + gate_L · act(mean(ctx_L))) on [B, C, H, W] maps (eq. 4-6), the
        sum divided by L + 1 where the model normalizes it; ctx_l is ``focal_layers[l]`` of
        ctx_(l-1). ``act`` and ``h`` are passed in: the two libraries name them differently."""
        levels = len(self.focal_layers)
        ctx_all = 0
        for level, focal_layer in enumerate(self.focal_layers):  # the levels run in sequence
            ctx = focal_layer(ctx)
            ctx_all = ctx_all + self.gating[level](ctx, gates[:, level : level + 1])
        ctx_global = act(ctx.mean((2, 3), keepdim=True))
        ctx_all = ctx_all + self.gating[levels](ctx_global, gates[:, levels:])
        if self.normalize_modulator:
            ctx_all = ctx_all / (levels + 1)
        return self.modulation(q, h(ctx_all))


class ExplicitFocalModulation(FocalProducts):
    """timm's ``FocalModulation`` with its products as modules (:class:`FocalProducts`). Shares the
    original's submodules under their names."""

    def __init__(self, module: focalnet.FocalModulation) -> None:
        super().__init__(module.focal_level, module.normalize_modulator)
        self.input_split = module.input_split
        self.f, self.focal_layers, self.act, self.h = module.f, module.focal_layers, module.act, module.h
        self.norm, self.proj, self.proj_drop = module.norm, module.proj, module.proj_drop

    def forward(self, x: Tensor) -> Tensor:
        q, ctx, gates = self.f(x).split(self.input_split, 1)
        return self.proj_drop(self.proj(self.norm(self.modulate(q, ctx, gates, self.act, self.h))))


register(focalnet.FocalModulation, Role.CONTAINER, twin=ExplicitFocalModulation)
register(focalnet.FocalNet, Role.INPUT, links=whole_network)  # the stem's convolution reads the image
for cls in (ExplicitFocalModulation, focalnet.FocalNetBlock, focalnet.FocalNetStage, focalnet.Downsample):
    register(cls, Role.CONTAINER)
