"""Early exit: each sample stops at the first step where its prediction is confident.

One simulation gives the SNN's output after every t ≤ T, so the accuracy of a confidence-based exit
rule costs no further run. The rule is SEENN's confidence-score thresholding (Li et al., "SEENN:
Towards Temporal Spiking Early-Exit Neural Networks", NeurIPS 2023): a sample exits after step

    t*(c) = min{t : max_k softmax(ȳ(t))_k ≥ c},   or T if no step reaches c,

where ȳ(t) is the SNN's output after t steps (the running mean of the head's output, as
:meth:`~transpike.SpikingModel.simulate` returns it), and its prediction is argmax ȳ(t*). A
network whose output stays close to the ANN's from the first steps lets most samples exit early,
so its mean number of steps is well below T at the accuracy of a fixed T.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .scores import correct, disagreements, paired_interval

CONFIDENCES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)  # the default thresholds c


def check_confidences(confidences: tuple[float, ...] | list[float]) -> tuple[float, ...]:
    """The thresholds c as a tuple; each must lie in (0, 1], a probability a sample can reach."""
    bad = [c for c in confidences if not 0.0 < c <= 1.0]
    if bad:
        raise ValueError(f"early-exit confidences must lie in (0, 1], got {bad}")
    return tuple(float(c) for c in confidences)


def exit_steps(outputs: Tensor, confidences: Sequence[float]) -> Tensor:
    """t*(c) - 1 for every threshold c and sample: [C, B] indices into the T steps.

    Args:
        outputs: the SNN's outputs after t = 1..T, [T, B, classes].
        confidences: the thresholds c.
    """
    confidence = outputs.softmax(-1).amax(-1)  # [T, B]
    thresholds = torch.tensor(confidences, dtype=confidence.dtype, device=confidence.device)
    reached = confidence >= thresholds[:, None, None]  # [C, T, B]
    reached[:, -1] = True  # no step reached c: the sample runs all T steps
    return reached.to(torch.uint8).argmax(1)  # the first step that reached c (argmax takes the first)


def exit_counts(outputs: Tensor, labels: Tensor, confidences: Sequence[float], logits: Tensor) -> Tensor:
    """Per threshold c, counts of the samples: exiting after t = 1..T steps, then right at their
    exit step (top-1, top-5), then right only by the ANN and only by the SNN (top-1; for the
    paired interval, :func:`~transpike.scores.paired_interval`): [C, T + 4].

    Args:
        outputs: the SNN's outputs after t = 1..T, [T, B, classes].
        labels: the samples' classes, [B].
        confidences: the thresholds c.
        logits: the ANN's outputs, [B, classes].
    """
    steps = exit_steps(outputs, confidences)  # [C, B]
    chosen = outputs.gather(0, steps[..., None].expand(-1, -1, outputs.shape[-1]))  # [C, B, classes]
    exited = torch.nn.functional.one_hot(steps, outputs.shape[0]).sum(1)  # [C, T]
    scores = torch.cat([correct(chosen, labels), disagreements(logits, chosen, labels)])  # [4, C]
    return torch.cat([exited, scores.T], 1).to(torch.float64)


def exit_table(
    counts: Tensor, confidences: Sequence[float], energy_ratio: list[float] | None = None
) -> list[dict]:
    """The results of :func:`exit_counts` summed over all samples, one dict per threshold c:
    ``confidence``, ``snn_top1`` and ``snn_top5`` (percent), ``difference_ci95`` (the half-width of
    the 95 % interval of SNN top-1 - ANN top-1), ``mean_steps`` (the mean of t*), ``exits`` (share
    of samples exiting after t = 1..T) and, given the energy after every t, ``energy_ratio``: Σ_t
    share(t)·E(t), the average sample's energy after its exit step (an estimate: samples that exit
    early may spike less or more than the average one).
    """
    samples = int(counts[0, :-4].sum())
    rows = []
    for c, row in zip(confidences, counts, strict=True):
        share = row[:-4] / samples
        steps = torch.arange(1, share.numel() + 1, dtype=share.dtype)
        entry = dict(
            confidence=float(c),
            snn_top1=(100.0 * row[-4] / samples).item(),
            snn_top5=(100.0 * row[-3] / samples).item(),
            difference_ci95=paired_interval(row[-2], row[-1], samples).item(),
            mean_steps=(share * steps).sum().item(),
            exits=share.tolist(),
        )
        if energy_ratio is not None:
            entry["energy_ratio"] = (share * torch.tensor(energy_ratio, dtype=share.dtype)).sum().item()
        rows.append(entry)
    return rows
