"""Choosing the base thresholds θ1, θ2 of an MT site from its calibration histogram.

``percentile`` is ECMT's rule (Algorithm 1, step 1): θ1 = p-th percentile, θ2 = -(100-p)-th
percentile of the values at the site. The reference code averages per-batch percentiles; here the
percentile is taken over the whole calibration distribution (the histogram), which does not depend
on the batch size.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .neurons import MTNeuron, top_level
from .observers import BINS_PER_OCTAVE, MAGNITUDE_BINS, HistogramObserver, bin_edges


def side_thresholds(upper: Tensor, lower: Tensor) -> tuple[Tensor, Tensor]:
    """θ1 = upper, θ2 = -lower, repaired where a side has no mass.

    A site (or channel) whose values are all ≥ 0 (softmax output) has lower ≥ 0, so θ2 would not
    be positive; the negative side then borrows θ1, and vice versa. A channel that is all zeros
    gets θ = 1 (it never reaches θ/2).
    """
    theta_pos, theta_neg = upper.clone(), -lower
    theta_pos = torch.where(theta_pos > 0, theta_pos, theta_neg)
    theta_neg = torch.where(theta_neg > 0, theta_neg, theta_pos)
    one = torch.ones_like(theta_pos)
    return torch.where(theta_pos > 0, theta_pos, one), torch.where(theta_neg > 0, theta_neg, one)


def percentile_thresholds(observer: HistogramObserver, percentile: float) -> tuple[Tensor, Tensor]:
    """ECMT: θ1 = P_p, θ2 = -P_{100-p} of the observed values."""
    return side_thresholds(observer.percentile(percentile), observer.percentile(100.0 - percentile))


SEARCH_BINS_PER_OCTAVE = 4
SEARCH_STEPS = (-4, 28)  # candidates θ = P_p·2^(-j/4), j in [-4, 28]: from 2·P_p down to P_p/128
HEADROOM = 2.0  # the top level must reach this multiple of the largest calibration value


def rate_error(
    values: Tensor, theta: Tensor, levels: int, rounding: str, neuron: str, horizon: int, per_octave: int = 1
) -> Tensor:
    """Mean over t = 1..H of the squared rate error (Φ(t) - a)² of one neuron with constant input a.

    With v(0) = 0 and constant input, S(t) = t·a - v(t), so Φ(t) - a = -v(t)/t: the error is read
    off the membrane. ``values`` and ``theta`` broadcast against each other (θ1 = θ2 = θ).
    """
    cell = MTNeuron(theta, theta, levels, rounding, neuron, per_octave)
    current = values.expand(torch.broadcast_shapes(values.shape, theta.shape))
    error = torch.zeros_like(current)
    for t in range(1, horizon + 1):
        cell(current)
        error.add_(cell.v.square() / t**2)
    return error / horizon


def mse_thresholds(
    observer: HistogramObserver,
    percentile: float,
    levels: int,
    rounding: str,
    neuron: str,
    horizon: int,
    per_octave: int = 1,
) -> tuple[Tensor, Tensor]:
    """θ1, θ2 that minimize the expected rate error over the first ``horizon`` steps.

    For each side of each channel, candidates θ = P_p·2^(-j/4) (from 2·P_p down to P_p/128) are
    scored by :func:`rate_error` averaged over the calibration histogram (coarsened to 4 bins per
    octave); constant input is assumed, which is exact for the first step and for layers fed
    directly by the input. Smaller θ means finer resolution and more spikes; the percentile
    threshold of ECMT is one of the candidates (j = 0).

    Candidates whose top level (θ·2^((n-1)/s), or θ·(2^n - 1) for the burst neuron) is below
    ``HEADROOM`` times the largest calibration value are excluded when any candidate reaches it:
    a value beyond the top level saturates the neuron, and the largest value seen in calibration,
    per channel especially, underestimates the largest value met in evaluation.
    """
    counts = observer.counts
    lower, upper = bin_edges(counts.dtype)
    centers = torch.sign(lower + upper) * (lower.abs() * upper.abs()).sqrt()
    merge = BINS_PER_OCTAVE // SEARCH_BINS_PER_OCTAVE
    magnitude_counts = counts[:, MAGNITUDE_BINS + 1 :], counts[:, :MAGNITUDE_BINS].flip(-1)
    chosen = []
    for side, q in zip(magnitude_counts, (percentile, 100.0 - percentile), strict=True):
        weights = side.reshape(side.shape[0], -1, merge).sum(-1)  # [C, coarse bins]
        values = centers[MAGNITUDE_BINS + 1 :].reshape(-1, merge).mean(-1).to(counts.device)
        used = weights.sum(0) > 0
        reference = observer.percentile(q).abs().flatten().to(counts.device)
        steps = torch.arange(SEARCH_STEPS[0], SEARCH_STEPS[1] + 1, device=counts.device, dtype=counts.dtype)
        theta = reference.view(-1, 1).double().clamp(min=1e-30) * torch.exp2(-steps / 4)  # [C, J]
        if not used.any():
            chosen.append(torch.zeros_like(reference))
            continue
        error = rate_error(
            values[used].view(1, 1, -1), theta.unsqueeze(-1), levels, rounding, neuron, horizon, per_octave
        )
        score = (error * weights[:, used].unsqueeze(1)).sum(-1)  # [C, J]
        largest = observer.percentile(100.0 if q > 50 else 0.0).abs().flatten().to(counts.device).double()
        top = theta * top_level(levels, neuron, per_octave)
        covers = top >= HEADROOM * largest.view(-1, 1)
        score = torch.where(covers | ~covers.any(1, keepdim=True), score, torch.inf)
        best = theta.gather(1, score.argmin(1, keepdim=True)).squeeze(1).float()
        # A side with no calibration mass gets 0 here and borrows the other side's θ below.
        chosen.append(torch.where(weights.sum(1) > 0, best, torch.zeros_like(best)))
    shape = observer.channel_shape
    theta_pos, theta_neg = chosen[0].view(shape), chosen[1].view(shape)
    return side_thresholds(theta_pos, -theta_neg)
