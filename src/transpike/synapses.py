"""Weight layers fed by MT neurons, and parallel parameter normalization (ECMT §4.4).

An MT neuron with 2n levels λ_p (θ1·2^(k/s) and -θ2·2^(k/s)) feeding a weight layer W is equivalent to 2n
binary-spike synapse copies ``W_p = W·λ_p / λ_1(next)`` (ECMT eq. 22), after which every neuron has
thresholds θ1 = 1 and θ2 = η = θ2/θ1. :class:`SpikingLayer` is the fast path used in simulation:
it multiplies each spike by its level before one dense product, ``I(t) = W·x(t) + b`` with
``x(t) = Σ_p s_p(t)·λ_p``. :class:`ParallelLayer` materializes the 2n copies with binary spikes, for
export and to check that both compute the same thing.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .neurons import MTNeuron, spike_planes
from .rules import rule_for
from .sites import StandsInForLayer


class SpikingLayer(StandsInForLayer):
    """MT neurons before a weight layer: ``layer(neuron(I))``.

    ``emits_rate`` (set by :func:`transpike.rates.link_rates`): the output is the rate of the
    layer's output current instead, ``layer(X(t)/t) = W·X(t)/t + b`` with X the sum of the
    neuron's spikes, for readers that take rates (the operand neurons after qkv, the GELU EC
    after fc1, the norms reading the residual stream): the running mean of ``layer(x(τ))`` over
    τ ≤ t, which they would otherwise keep. See :func:`rate_output`.

    ``ann_weight``: where the layer's weight was quantized (:mod:`transpike.precision`), the ANN's
    float weight, saved with the network so that its ANN stays the float one
    (:meth:`~transpike.model.SpikingModel.ann_state_dict`); None otherwise.
    """

    def __init__(self, neuron: MTNeuron, layer: nn.Module, ann_weight: Tensor | None = None) -> None:
        super().__init__()
        self.neuron = neuron
        self.layer = layer
        self.emits_rate = False
        self.register_buffer("ann_weight", ann_weight)

    def forward(self, current: Tensor) -> Tensor:
        spikes = self.neuron(current)
        if self.emits_rate:
            return rate_output(self.layer, self.neuron.total, self.neuron.t)
        return self.layer(spikes)


def rate_output(layer: nn.Module, total: Tensor, t: int) -> Tensor:
    """``layer(X/t)``, the rate of a layer's output from its input's spike sum X after t steps.

    For a Linear layer, ``b + (1/t)·X·Wᵀ`` with 1/t as the GEMM's α (``addmm``): no pass over X
    and no copy of it. The layer module is called instead (the same value up to rounding) when it
    is a subclass, which may compute something else in its forward, or has hooks, which must see
    its input and output.
    """
    if type(layer) is not nn.Linear or layer._forward_hooks or layer._forward_pre_hooks:
        return layer(total / t)
    flat = total.reshape(-1, total.shape[-1])
    bias = layer.bias if layer.bias is not None else flat.new_zeros(())
    out = torch.addmm(bias, flat, layer.weight.t(), alpha=1.0 / t)
    return out.view(*total.shape[:-1], layer.out_features)


def level_values(theta_pos: Tensor, theta_neg: Tensor, levels: int, per_octave: int = 1) -> Tensor:
    """λ_p for p = 1..2n: [θ1·2^(0/s) .. θ1·2^((n-1)/s), -θ2·2^(0/s) .. -θ2·2^((n-1)/s)], shape
    [2n, *theta.shape] (s levels per octave; 1 in ECMT)."""
    exponents = torch.arange(levels, dtype=theta_pos.dtype, device=theta_pos.device) / per_octave
    powers = torch.exp2(exponents)
    powers = powers.view(-1, *[1] * theta_pos.dim())
    return torch.cat([powers * theta_pos, -powers * theta_neg])


def parallel_weights(
    weight: Tensor, theta_pos: Tensor, theta_neg: Tensor, levels: int, per_octave: int = 1
) -> Tensor:
    """The 2n synapse copies ``W_p = W·λ_p`` of a layer fed by an MT neuron (ECMT eq. 22).

    λ_p multiplies W along its input-channel axis (thresholds of shape [] or [in, 1, ..]). The
    division by λ_1(next) of eq. 22 normalizes the *next* neuron's thresholds to 1; it is applied
    by that neuron (see :class:`ParallelLayer`), since in a Transformer the next neuron sits behind
    a residual sum or an EC module rather than directly after this layer.

    Returns:
        Tensor [2n, *weight.shape].
    """
    lam = level_values(theta_pos, theta_neg, levels, per_octave)
    lam = lam.view(lam.shape[0], *[1] * (weight.dim() - theta_pos.dim()), *theta_pos.shape)
    return weight.unsqueeze(0) * lam


class ParallelLayer(nn.Module):
    """A :class:`SpikingLayer` with its 2n synapse copies materialized (ECMT §4.4).

    The neuron is normalized to θ1 = 1, θ2 = η = θ2/θ1: its input current is divided by θ1 (the
    1/λ_1 factor of eq. 22, which hardware folds into the producing layer) and it emits binary
    spikes on 2n lines, which drive the copies W_p as one layer with 2n times the input channels.
    """

    def __init__(self, spiking: SpikingLayer, channel_dim: int) -> None:
        super().__init__()
        neuron, layer = spiking.neuron, spiking.layer
        plain = rule_for(layer).plain
        if plain is not None:  # the weight it computes in forward is the one to copy
            layer = plain(layer)
        if getattr(layer, "groups", 1) != 1:
            raise ValueError("parallel weights need an ungrouped layer (groups=1)")
        theta_pos, theta_neg = neuron.theta_pos, neuron.theta_neg
        self.neuron = MTNeuron(
            torch.ones_like(theta_pos),
            theta_neg / theta_pos,
            neuron.levels,
            neuron.rounding,
            neuron.neuron,
            neuron.per_octave,
        )
        self.register_buffer("input_gain", 1.0 / theta_pos)
        self.channel_dim = channel_dim
        # a transposed convolution's weight is [in, out, ...]: the copies are made as [out, in, ...]
        transposed = getattr(layer, "transposed", False)
        weight = layer.weight.detach()
        weight = weight.transpose(0, 1) if transposed else weight
        copies = parallel_weights(weight, theta_pos, theta_neg, neuron.levels, neuron.per_octave)
        self.layer = copy.deepcopy(layer)
        # [2n, out, in, ...] -> [out, 2n*in, ...]: plane-major, matching how spikes are concatenated.
        copies = copies.transpose(0, 1).flatten(1, 2)
        copies = copies.transpose(0, 1) if transposed else copies
        self.layer.weight = nn.Parameter(copies, requires_grad=False)

    def forward(self, current: Tensor) -> Tensor:
        spikes = self.neuron(current * self.input_gain)
        neuron = self.neuron
        planes = spike_planes(spikes, neuron.theta_pos, neuron.theta_neg, neuron.levels, neuron.per_octave)
        lines = planes.movedim(0, self.channel_dim - 1).flatten(self.channel_dim - 1, self.channel_dim)
        return self.layer(lines)


def parallel_network(network: nn.Module) -> nn.Module:
    """A copy of a converted network with every :class:`SpikingLayer` as a :class:`ParallelLayer`.

    A parallel layer takes and gives increments: the rate links of the copy must be undone
    (``transpike.rates.link_rates(copy, enabled=False)``, as :meth:`SpikingModel.parallel` does)."""
    network = copy.deepcopy(network)
    for module in list(network.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, SpikingLayer):
                channel_dim = rule_for(child.layer).channel_dims[0]
                setattr(module, name, ParallelLayer(child, channel_dim))
    return network
