"""Rules for squeeze-and-excitation (Hu et al. 2018, "Squeeze-and-Excitation Networks"):
torchvision's ``SqueezeExcitation`` (MaxViT's MBConv blocks), timm's ``SEModule`` and
``EffectiveSEModule`` (timm's MaxViT and CoAtNet), and timm's ``EcaModule`` (Wang et al. 2020,
"ECA-Net": a 1-D convolution across the channel means instead of the two Linears; the ECA BoTNet
and HaloNet).

Each scales every channel of x by a gate computed from the channel means, x·σ(f(mean(x))). The
gate depends on x, so the product is one of two spiking operands: each twin computes the same with
the product a module (MT neurons on x and on the gate, the product EC), the gate broadcast over
the pixels. The means are linear, the gate's convolutions weight layers, its activations EC
modules.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from timm.layers.eca import EcaModule
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


def _efficient_channel_attention(eca: EcaModule, x: Tensor) -> Tensor:
    """timm ``EcaModule``'s gate: a 1-D convolution across the channel means (two, with an
    activation between them, where it has a second), then the gate."""
    y = eca.conv(x.mean((2, 3)).view(x.shape[0], 1, -1))
    if hasattr(eca, "conv2"):  # the twin holds the original's children: none where it has no conv2
        y = eca.conv2(eca.act(y))
    return eca.gate(y).view(x.shape[0], -1, 1, 1)


def _refuse_max(se: nn.Module) -> str | None:
    return "add_maxpool (a max over the pixels inside the block) is not supported" if se.add_maxpool else None


# torchvision's own method computes its gate on the twin's children of the same names
GATES = {
    SqueezeExcitation: SqueezeExcitation._scale,
    SEModule: _squeeze_excite,
    EffectiveSEModule: _effective_squeeze_excite,
    EcaModule: _efficient_channel_attention,
}
for cls, scale in GATES.items():
    check = _refuse_max if cls in (SEModule, EffectiveSEModule) else None
    register(cls, Role.CONTAINER, twin=partial(ExplicitSqueezeExcite, scale=scale), check=check)
register(ExplicitSqueezeExcite, Role.CONTAINER)
