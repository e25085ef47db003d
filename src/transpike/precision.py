"""Synaptic precision: the weights of the layers fed by spikes, kept with b bits.

A neuromorphic chip stores each synaptic weight as a small signed integer with a scale shared by a
group of synapses, not as a 32-bit float. ``convert(..., weight_bits=b)`` rounds the weight of every
layer fed by MT neurons to such a grid before calibration, so that the thresholds are set on the
activations the deployed synapses produce, and the accuracy reported is that of the network the
chip would run. Only the synapses are rounded: the layer that reads the input (direct coding), the
biases and the EC modules' parameters (LayerNorm's affine) stay floating point, as they are not
weights of spiking synapses. The float weights stay beside the rounded ones (``ann_weight`` of
:class:`~transpike.synapses.SpikingLayer`), so the network's ANN is still the float one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .rules import Rule


def quantize(weight: Tensor, bits: int, axis: int | None) -> Tensor:
    """Symmetric uniform quantization to ``bits`` bits (Krishnamoorthi 2018, "Quantizing deep
    convolutional networks for efficient inference", §2.1, the symmetric case):

    ``W_q = s · clamp(round(W / s), -q, q)``, ``q = 2^(b-1) - 1``, ``s = max|W| / q``,

    the maximum taken over each slice along ``axis`` (one scale per output channel) or over the
    whole tensor (``axis`` None). A slice of zeros keeps its zeros.
    """
    top = 2 ** (bits - 1) - 1
    if axis is None:
        largest = weight.abs().amax()
    else:
        others = [d for d in range(weight.dim()) if d != axis % weight.dim()]
        largest = weight.abs().amax(dim=others, keepdim=True)
    scale = torch.where(largest > 0, largest / top, torch.ones_like(largest))
    return scale * torch.clamp(torch.round(weight / scale), -top, top)


def quantized_layer(layer: nn.Module, rule: Rule, bits: int, granularity: str) -> tuple[nn.Module, Tensor]:
    """``layer`` with its weight quantized (:func:`quantize`), and its float weight. The rounded
    weight replaces ``layer``'s own (``prepare`` hands it its copy of the model's layer).

    A layer that computes its weight in forward (weight standardization) is first replaced by the
    plain layer it amounts to (its rule's ``plain``): the weight it computes is the one stored.
    ``granularity``: "channel" (one scale per output channel; a transposed convolution's are along
    its weight's second axis) or "tensor" (one scale for the layer).
    """
    original = layer.weight.detach()
    if rule.plain is not None:
        layer = rule.plain(layer)
    axis = (1 if getattr(layer, "transposed", False) else 0) if granularity == "channel" else None
    layer.weight = nn.Parameter(quantize(layer.weight.detach(), bits, axis), requires_grad=False)
    return layer, original
