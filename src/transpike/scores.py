"""What is counted per batch to score the SNN against the labels and against the ANN.

Everything here is a count (summed over batches and processes exactly in float64) or a function of
counts, so an evaluation split over batches, processes or an interruption scores as one whole run.
"""

from __future__ import annotations

import torch
from torch import Tensor


def correct(logits: Tensor, y: Tensor) -> Tensor:
    """Top-1 and top-5 correct predictions among ``logits`` [..., B, C] for labels ``y`` [B]:
    [2, ...] (top-5 is top-C for fewer than 5 classes). Top-1 is the argmax, as everywhere here."""
    top1 = (logits.argmax(-1) == y).sum(-1)
    top5 = (logits.topk(min(5, logits.shape[-1]), -1).indices == y[:, None]).any(-1).sum(-1)
    return torch.stack([top1, top5])


def disagreements(logits: Tensor, outputs: Tensor, y: Tensor) -> Tensor:
    """Per t, the samples whose top-1 only the ANN gets right and those only the SNN gets right:
    [2, T] for the ANN's ``logits`` [B, C] and the SNN's ``outputs`` [T, B, C]."""
    ann, snn = logits.argmax(-1) == y, outputs.argmax(-1) == y
    return torch.stack([(ann & ~snn).sum(-1), (snn & ~ann).sum(-1)])


def paired_interval(lost: Tensor, gained: Tensor, samples: int) -> Tensor:
    """Half-width, in points, of the 95 % interval of SNN top-1 - ANN top-1 from paired samples.

    Each sample gives d = [SNN right] - [ANN right] in {-1, 0, 1}: -1 for the ``lost``, +1 for the
    ``gained``. The difference is the mean of d, and its interval mean ± 1.96·s/√n (normal
    approximation, s² the sample variance of d: (l + g - n·mean²)/(n - 1)). Pairing counts only the
    samples the two disagree on, so the interval is far narrower than one from the two accuracies
    taken apart, and 0 when they agree on every sample.
    """
    n = samples
    mean = (gained - lost) / n
    variance = ((lost + gained) - n * mean**2).clamp(min=0) / max(n - 1, 1)
    return 100.0 * 1.96 * (variance / n).sqrt()
