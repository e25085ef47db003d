"""The ANN-side forms of MT sites, as built by ``prepare`` (still an ANN, with observers).

- :class:`Observed`: a weight layer (Linear, Conv) with an observer on its input; becomes a
  :class:`~transpike.synapses.SpikingLayer` (MT neurons before the layer).
- :class:`Product`: a product of two activations (Q·Kᵀ, attn·V, gating) with a site on each operand;
  becomes a :class:`~transpike.compensation.SpikingProduct`.
- :class:`Unconverted`: a module the converter leaves analog; becomes an analog EC module, so it is
  still computed on rates and the network stays correct.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .compensation import PRODUCT_OPS

#: What a model may read of its own weight layers in its forward (DaViT pads a map by its
#: downsampling convolution's kernel size): a wrapper that stands in for the layer answers for it.
LAYER_SHAPE = frozenset(
    ["kernel_size", "stride", "padding", "dilation", "groups", "padding_mode", "in_channels",
     "out_channels", "in_features", "out_features"]
)  # fmt: skip


class StandsInForLayer(nn.Module):
    """A module that wraps a weight layer ``layer`` and answers for its shape (:data:`LAYER_SHAPE`)."""

    def __getattr__(self, name: str) -> object:
        if name in LAYER_SHAPE:
            return getattr(self._modules["layer"], name)
        return super().__getattr__(name)


class Observed(StandsInForLayer):
    """A weight layer whose input is an MT site: ``layer(observer(x))``.

    ``ann_weight``: the float weight of a layer whose weight was quantized
    (:mod:`transpike.precision`), handed on to its :class:`~transpike.synapses.SpikingLayer`.
    """

    def __init__(self, layer: nn.Module, observer: nn.Module, ann_weight: Tensor | None = None) -> None:
        super().__init__()
        self.observer = observer
        self.layer = layer
        self.ann_weight = ann_weight

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(self.observer(x))


class Product(nn.Module):
    """``op(a, b) * scale`` with an MT site on each operand.

    Args:
        op: "matmul" or "mul".
        scale: constant factor (the attention scale), folded into the product.
        channels_a, channels_b: channel dimensions of each operand (negative indices), used for
            per-channel thresholds.
    """

    def __init__(
        self,
        op: str = "matmul",
        scale: float = 1.0,
        channels_a: tuple[int, ...] = (-1,),
        channels_b: tuple[int, ...] = (-1,),
    ) -> None:
        super().__init__()
        if op not in PRODUCT_OPS:
            raise ValueError(f"op must be one of {sorted(PRODUCT_OPS)}, got {op!r}")
        self.op = op
        self.scale = float(scale)
        self.channels_a = channels_a
        self.channels_b = channels_b
        self.site_a: nn.Module = nn.Identity()
        self.site_b: nn.Module = nn.Identity()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        out = PRODUCT_OPS[self.op](self.site_a(a), self.site_b(b))
        return out * self.scale if self.scale != 1.0 else out

    def extra_repr(self) -> str:
        return f"op={self.op}, scale={self.scale:.6g}"


class Unconverted(nn.Module):
    """A module left analog, with the reason shown in the conversion report."""

    def __init__(self, module: nn.Module, reason: str) -> None:
        super().__init__()
        self.module = module
        self.reason = reason

    def forward(self, x: Tensor, *args: object, **constants: object) -> Tensor:
        # its EC module keeps the rate of x and of every further positional tensor (keyword tensors
        # are taken as the constants they are in timm: rotary tables)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"a module left analog ({type(self.module).__name__}) must take a tensor first, "
                            f"got {type(x).__name__}")  # fmt: skip
        return self.module(x, *args, **constants)

    def extra_repr(self) -> str:
        return f"reason={self.reason!r}"
