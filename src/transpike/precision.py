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

#: how the scale of a slice of weights is chosen (see :func:`weight_scale`)
SCALES = ("max", "mse")
#: the clipping ratios r the "mse" scale tries: s = r·max|W|/q
RATIOS = torch.arange(20, 101, dtype=torch.float64) / 100


def rounded(weight: Tensor, scale: Tensor, top: int) -> Tensor:
    """``W_q = s · clamp(round(W / s), -q, q)``: W on the grid of step s with 2q + 1 values."""
    return scale * torch.clamp(torch.round(weight / scale), -top, top)


def weight_scale(weight: Tensor, bits: int, axis: int | None, method: str = "max") -> Tensor:
    """The step s of each slice along ``axis`` (one per output channel; ``axis`` None: one for the
    tensor) of a symmetric grid of ``bits`` bits, ``q = 2^(b-1) - 1`` steps a side:

    - "max": ``s = max|W| / q``, no weight clipped (Krishnamoorthi 2018, "Quantizing deep
      convolutional networks for efficient inference", §2.1, the symmetric case);
    - "mse": ``s = r·max|W| / q`` with the ratio r of :data:`RATIOS` that minimizes the slice's
      ``Σ (W - W_q)²``: the MSE-optimal clipping that OMSE (Choukroun et al. 2019) solves for, by
      search. It clips the few largest weights for a finer step for all the others, which pays at
      few bits. The loop is over the candidate ratios, each pass covering every slice at once:
      82 passes over the weights, about a second per million weights on two CPU cores.

    A slice of zeros gets the step 1/q (its weights stay 0). Returns s, broadcastable to W.
    """
    top = 2 ** (bits - 1) - 1
    dims = (
        list(range(weight.dim()))
        if axis is None
        else [d for d in range(weight.dim()) if d != axis % weight.dim()]
    )
    largest = weight.abs().amax(dim=dims, keepdim=True)
    largest = torch.where(largest > 0, largest, torch.ones_like(largest))
    best = largest / top
    if method == "max":
        return best

    def error(scale: Tensor) -> Tensor:
        return (weight - rounded(weight, scale, top)).square().sum(dim=dims, keepdim=True)

    least = error(best)  # "max" stays where no ratio does strictly better
    for ratio in RATIOS.tolist():
        scale = largest * (ratio / top)
        found = error(scale)
        better = found < least
        best, least = torch.where(better, scale, best), torch.where(better, found, least)
    return best


def quantize(weight: Tensor, bits: int, axis: int | None, method: str = "max") -> Tensor:
    """``weight`` on its symmetric grid of ``bits`` bits: :func:`rounded` with the step of
    :func:`weight_scale`."""
    return rounded(weight, weight_scale(weight, bits, axis, method), 2 ** (bits - 1) - 1)


def quantized_layer(
    layer: nn.Module, rule: Rule, bits: int, granularity: str, scale: str = "max"
) -> tuple[nn.Module, Tensor]:
    """``layer`` with its weight quantized (:func:`quantize`), and its float weight. The rounded
    weight replaces ``layer``'s own (``prepare`` hands it its copy of the model's layer).

    A layer that computes its weight in forward (weight standardization) is first replaced by the
    plain layer it amounts to (its rule's ``plain``): the weight it computes is the one stored.
    ``granularity``: "channel" (one scale per output channel; a transposed convolution's are along
    its weight's second axis) or "tensor" (one scale for the layer); ``scale``: how each is chosen
    (:func:`weight_scale`).
    """
    original = layer.weight.detach()
    if rule.plain is not None:
        layer = rule.plain(layer)
    axis = (1 if getattr(layer, "transposed", False) else 0) if granularity == "channel" else None
    layer.weight = nn.Parameter(quantize(layer.weight.detach(), bits, axis, scale), requires_grad=False)
    return layer, original
