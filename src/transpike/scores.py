"""What is counted per batch to score the SNN against the labels and against the ANN.

Everything here is a count (summed over batches and processes exactly in float64) or a function of
counts, so an evaluation split over batches, processes or an interruption scores as one whole run.
"""

from __future__ import annotations

import math

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


def agreement(logits: Tensor, outputs: Tensor) -> Tensor:
    """Per t, the samples whose SNN top-1 is the ANN's, right or wrong: [T] for the ANN's
    ``logits`` [B, C] and the SNN's ``outputs`` [T, B, C]. How faithfully the conversion keeps the
    ANN's decisions, which the two top-1s hide where the SNN loses some samples and gains as many;
    it needs no labels."""
    return (outputs.argmax(-1) == logits.argmax(-1)).sum(-1)


def paired_interval(lost: Tensor, gained: Tensor, samples: int) -> Tensor:
    """Half-width, in points, of the 95 % interval of SNN top-1 - ANN top-1 from paired samples
    (or of any second classifier's top-1 against a first's).

    The two are scored on the same samples, so only those they disagree on count: ``lost`` (right
    by the ANN only) and ``gained`` (right by the SNN only) of n. The interval is Agresti and Min's
    for matched proportions (Biometrics 2005): the Wald interval after adding 1/2 to each cell of
    the paired 2×2 table, with p_l = (lost + 1/2)/(n + 2), p_g = (gained + 1/2)/(n + 2),

        ± 1.96·√((p_l + p_g - (p_g - p_l)²)/(n + 2)),

    which keeps its coverage when few samples differ, where the plain Wald interval shrinks to 0.
    It is far narrower than one from the two accuracies taken apart.
    """
    n = samples + 2
    p_lost, p_gained = (lost + 0.5) / n, (gained + 0.5) / n
    return 100.0 * 1.96 * ((p_lost + p_gained - (p_gained - p_lost) ** 2) / n).sqrt()


def matches_from(differences: list[float], half_widths: list[float]) -> int | None:
    """The first t from which the SNN cannot be told from the ANN at every later t: each 95 %
    interval of SNN top-1 - ANN top-1 (difference ± half-width, :func:`paired_interval`) holds 0
    from t to T. None if it does not hold at T. Not "equal": the data cannot tell them apart."""
    t = len(differences)
    while t > 0 and abs(differences[t - 1]) <= half_widths[t - 1]:
        t -= 1
    return t + 1 if t < len(differences) else None


def mcnemar_p(lost: Tensor, gained: Tensor) -> Tensor:
    """Two-sided exact McNemar p-value of two classifiers scored on the same samples.

    Of the samples they disagree on, ``lost`` are right by the first only and ``gained`` by the
    second only; if both were equally accurate, each of the n = lost + gained would fall either way
    with probability 1/2 (McNemar, Psychometrika 1947; the exact, binomial form):

        p = min(1, 2·P(X ≤ min(lost, gained))),   X ~ Binomial(n, 1/2),

    summed in log space (n may be tens of thousands). Elementwise over tensors of counts; n = 0
    gives 1.
    """
    lost, gained = torch.as_tensor(lost, dtype=torch.float64), torch.as_tensor(gained, dtype=torch.float64)
    n, k = lost + gained, torch.minimum(lost, gained)
    i = torch.arange(int(k.max()) + 1 if k.numel() else 1, dtype=torch.float64, device=k.device)  # tail terms
    n_, k_ = n[..., None], k[..., None]
    log_terms = torch.lgamma(n_ + 1) - torch.lgamma(i + 1) - torch.lgamma(n_ - i + 1) - n_ * math.log(2.0)
    tail = torch.where(i <= k_, log_terms, -math.inf).logsumexp(-1).exp()
    return (2.0 * tail).clamp(max=1.0)


def holm(p: Tensor) -> Tensor:
    """Holm's step-down adjustment of m p-values (Holm, Scandinavian Journal of Statistics 1979):
    each adjusted p below a level α says "differs" with a chance below α of any false one among all
    m tests. With the p sorted ascending, p̃_(i) = max_{j ≤ i} min(1, (m - j + 1)·p_(j)); returned
    in the original order."""
    order = p.argsort()
    factors = torch.arange(p.numel(), 0, -1, dtype=p.dtype, device=p.device)
    adjusted = (p[order] * factors).clamp(max=1.0).cummax(0).values
    return torch.empty_like(p).scatter_(0, order, adjusted)


def top1_among(labels: Tensor, ann: Tensor, snn: Tensor, chosen: Tensor) -> dict:
    """Top-1 (percent) of the ANN and of the SNN after every t on the ``chosen`` samples only (bool
    [N]), from every sample's top-1 classes ``labels`` [N], ``ann`` [N] and ``snn`` [N, T]:
    ``samples``, ``ann_top1``, ``snn_top1`` (list over t)."""
    n = int(chosen.sum())
    right_ann, right_snn = ann[chosen] == labels[chosen], snn[chosen] == labels[chosen, None]
    return dict(samples=n, ann_top1=100.0 * right_ann.sum().item() / n,
                snn_top1=(100.0 * right_snn.sum(0).double() / n).tolist())  # fmt: skip


def per_class(labels: Tensor, ann: Tensor, snn: Tensor) -> dict[str, Tensor]:
    """The SNN against its ANN class by class, from every sample's top-1 classes: ``labels`` [N],
    ``ann`` [N] and ``snn`` [N, T] (as :func:`~transpike.evaluate.evaluate` returns them).

    Per class c that has samples (``classes``, ascending): ``samples``, ``ann_right`` (top-1
    right), ``snn_right`` [C, T] (after t = 1..T), and at T ``lost`` and ``gained`` (right by the
    ANN only, by the SNN only), the exact McNemar ``p`` (:func:`mcnemar_p`) and ``p_holm``, adjusted
    over the classes (:func:`holm`): which classes the conversion loses beyond chance.
    """
    classes, index = labels.unique(return_inverse=True)  # each sample's row in the table
    right_ann, right_snn = ann == labels, snn == labels[:, None]  # [N], [N, T]
    lost, gained = right_ann & ~right_snn[:, -1], right_snn[:, -1] & ~right_ann

    def count(hits: Tensor) -> Tensor:  # per class, of [N] or [N, T] flags (memory O(N·T), not N·C)
        return hits.new_zeros((len(classes), *hits.shape[1:]), dtype=torch.float64).index_add_(
            0, index, hits.to(torch.float64)
        )

    lost_c, gained_c = count(lost), count(gained)
    p = mcnemar_p(lost_c, gained_c)
    return dict(classes=classes, samples=count(torch.ones_like(labels)), ann_right=count(right_ann),
                snn_right=count(right_snn), lost=lost_c, gained=gained_c, p=p, p_holm=holm(p))  # fmt: skip
