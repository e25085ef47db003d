"""Rules for squeeze-and-excitation (Hu et al. 2018, "Squeeze-and-Excitation Networks"):
torchvision's ``SqueezeExcitation`` (MaxViT's MBConv blocks), timm's ``SEModule`` and
``EffectiveSEModule`` (timm's MaxViT and CoAtNet).

Each scales every channel of x by a gate computed from the channel means, x·σ(f(mean(x))). The
gate depends on x, so the product is one of two spiking operands: each twin computes the same with
the product a module (MT neurons on x and on the gate, the product EC), the gate broadcast over
the pixels. The means are linear, the gate's convolutions weight layers, its activations EC
modules.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from timm.layers.squeeze_excite import EffectiveSEModule, SEModule
from torch import Tensor, nn
from torchvision.ops.misc import SqueezeExcitation

from ..sites import Product
from . import Role, register


class ExplicitSqueezeExcite(nn.Module):
    """x·gate(x) (Hu et al. 2018, eq. 2-4) with the product a module. Shares the original's
    children under their names; ``scale(module, x)`` computes the gate with them (the original's
    own method where it has one)."""

    def __init__(self, se: nn.Module, scale: Callable[[nn.Module, Tensor], Tensor]) -> None:
        super().__init__()
        for name, child in se.named_children():
            self.add_module(name, child)
        self.scale = scale
        self.gating = Product("mul", 1.0, channels_a=(-3,), channels_b=(-3,))

    def forward(self, x: Tensor) -> Tensor:
        return self.gating(x, self.scale(self, x))


def _squeeze_excite(se: SEModule, x: Tensor) -> Tensor:
    """timm ``SEModule``'s gate: fc1, norm, activation, fc2 and the gate on the channel means."""
    return se.gate(se.fc2(se.act(se.bn(se.fc1(x.mean((2, 3), keepdim=True))))))


def _effective_squeeze_excite(se: EffectiveSEModule, x: Tensor) -> Tensor:
    """timm ``EffectiveSEModule``'s gate: one convolution and the gate on the channel means."""
    return se.gate(se.fc(x.mean((2, 3), keepdim=True)))


def _refuse_max(se: nn.Module) -> str | None:
    return "add_maxpool (a max over the pixels inside the block) is not supported" if se.add_maxpool else None


# torchvision's own method computes its gate on the twin's children of the same names
GATES = {
    SqueezeExcitation: SqueezeExcitation._scale,
    SEModule: _squeeze_excite,
    EffectiveSEModule: _effective_squeeze_excite,
}
for cls, scale in GATES.items():
    check = None if cls is SqueezeExcitation else _refuse_max
    register(cls, Role.CONTAINER, twin=partial(ExplicitSqueezeExcite, scale=scale), check=check)
register(ExplicitSqueezeExcite, Role.CONTAINER)
