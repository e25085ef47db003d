"""Bounded-memory activation statistics at MT sites (the "calibrate" stage).

An observer records the values that reach an MT site while the ANN runs on calibration data and
passes them on unchanged. It keeps a fixed histogram per channel (or one per site), so memory does
not grow with the number of calibration batches, and thresholds are read from it afterwards.

Bins are logarithmic in |x| with a sign, so every magnitude from 2^-24 to 2^16 gets the same
relative resolution (2^(1/16) ≈ 4.4 % per bin, refined by interpolation inside a bin): a site whose
values are all tiny (attention probabilities) is resolved as well as one with large outliers, with
no re-binning when the range grows. Exact zeros have their own bin.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

LOG2_MIN, LOG2_MAX, BINS_PER_OCTAVE = -24, 16, 16
MAGNITUDE_BINS = (LOG2_MAX - LOG2_MIN) * BINS_PER_OCTAVE
NUM_BINS = 2 * MAGNITUDE_BINS + 1  # negative bins (most negative first), zero, positive bins


def bin_index(x: Tensor) -> Tensor:
    """Histogram bin of each value, ordered by value: 0 = most negative, MAGNITUDE_BINS = exact zero."""
    magnitude = torch.log2(x.abs()).sub_(LOG2_MIN).mul_(BINS_PER_OCTAVE).floor_()
    magnitude = magnitude.clamp_(0, MAGNITUDE_BINS - 1).add_(1).mul_(torch.sign(x))
    return magnitude.add_(MAGNITUDE_BINS).to(torch.int64)


def bin_edges(dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Lower and upper value edge of every bin, in the order of :func:`bin_index`."""
    exponents = LOG2_MIN + torch.arange(MAGNITUDE_BINS + 1, dtype=dtype) / BINS_PER_OCTAVE
    edges = torch.exp2(exponents)
    edges[0] = 0.0  # the first magnitude bin also holds everything below 2^LOG2_MIN
    pos_lo, pos_hi = edges[:-1], edges[1:]
    zero = torch.zeros(1, dtype=dtype)
    lower = torch.cat([-pos_hi.flip(0), zero, pos_lo])
    upper = torch.cat([-pos_lo.flip(0), zero, pos_hi])
    return lower, upper


def histogram_percentile(counts: Tensor, q: float) -> Tensor:
    """The q-th percentile (0..100) of each row of histogram ``counts`` [C, NUM_BINS].

    Linear interpolation inside the bin that holds the rank q/100·N.
    """
    cdf = counts.cumsum(-1)
    total = cdf[:, -1:]
    rank = (total * (q / 100.0)).clamp_(min=1e-9)  # q = 0: the lower edge of the first non-empty bin
    index = torch.searchsorted(cdf, rank).clamp_(max=NUM_BINS - 1)
    below = torch.where(index > 0, cdf.gather(-1, (index - 1).clamp_(min=0)), torch.zeros_like(rank))
    inside = counts.gather(-1, index)
    frac = ((rank - below) / inside.clamp(min=1e-12)).clamp_(0, 1)
    lower, upper = (edge.to(counts.device)[index] for edge in bin_edges(counts.dtype))
    return (lower + frac * (upper - lower)).squeeze(-1)


class HistogramObserver(nn.Module):
    """Records a site's value distribution; returns its input unchanged.

    Args:
        channel_dims: dimensions (negative indices) that index channels, e.g. ``(-1,)`` for the
            features of a Linear input or ``(-3, -1)`` for (head, head_dim) of a query tensor.
            Empty: one histogram for the whole site (per-tensor thresholds).
        path: where the site is in the model, for error messages.
    """

    def __init__(self, channel_dims: tuple[int, ...] = (), path: str = "") -> None:
        super().__init__()
        if any(d >= 0 for d in channel_dims):
            raise ValueError(f"channel_dims must be negative dimension indices, got {channel_dims}")
        self.channel_dims = tuple(sorted(channel_dims))
        self.path = path
        self.reset()

    def reset(self) -> None:
        """Forget everything recorded."""
        self.counts: Tensor | None = None
        self.channel_shape: tuple[int, ...] = ()
        self.batches = 0

    def forward(self, x: Tensor) -> Tensor:
        self.record(x)
        return x

    @torch.no_grad()
    def record(self, x: Tensor) -> None:
        if not torch.isfinite(x).all():
            raise ValueError(f"non-finite activation (NaN or Inf) at MT site {self.path or '<root>'}")
        shape = self.threshold_shape(x)
        if self.counts is None:
            self.channel_shape = shape
            self.counts = torch.zeros(math.prod(shape), NUM_BINS, dtype=torch.float64, device=x.device)
        elif shape != self.channel_shape:
            raise ValueError(
                f"MT site {self.path or '<root>'}: channel shape changed from {self.channel_shape} to "
                f"{shape} between calibration batches"
            )
        index = bin_index(x.detach().float())
        if self.channel_dims:
            channel = torch.arange(self.counts.shape[0], device=x.device).view(shape) * NUM_BINS
            index = index + channel
        self.counts += torch.bincount(index.flatten(), minlength=self.counts.numel()).view_as(self.counts)
        self.batches += 1

    def threshold_shape(self, x: Tensor) -> tuple[int, ...]:
        """Shape of per-channel thresholds that broadcast against x ( () for per-tensor )."""
        if not self.channel_dims:
            return ()
        if -min(self.channel_dims) > x.dim():
            raise ValueError(
                f"MT site {self.path}: channel dims {self.channel_dims} need more than {x.dim()} dims"
            )
        first = min(self.channel_dims)
        return tuple(x.shape[d] if d in self.channel_dims else 1 for d in range(first, 0))

    def percentile(self, q: float) -> Tensor:
        """The q-th percentile per channel, shaped to broadcast against the site's input."""
        if self.counts is None:
            raise RuntimeError(f"MT site {self.path or '<root>'} saw no calibration data")
        return histogram_percentile(self.counts, q).view(self.channel_shape).float()

    def extra_repr(self) -> str:
        return f"channel_dims={self.channel_dims}, batches={self.batches}"
