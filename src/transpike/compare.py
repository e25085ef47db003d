"""Is one conversion better than another? Two evaluations compared sample by sample.

Two networks evaluated on the same samples (say the paper's thresholds and MSE thresholds of one
ANN, or ECMT and SIT) are compared as the SNN is compared with its ANN
(:mod:`transpike.scores`): at every t, the difference of their top-1 with the 95 % interval from the
samples only one of them gets right, and the exact McNemar p-value of "both are equally
accurate". Each t is a test of its own, so with T of them one plain p below 0.05 by chance is
likely; Holm's adjustment over the t compared (``p_holm``) keeps that chance below 0.05 for all of
them together. Taken apart, two accuracies near 97 % on the 719 digits test images would leave
their difference uncertain by ± 1.7 points, hiding differences that pairing shows. Where the two
share their ANN, the same test against the ANN's top-1 instead of the labels says which conversion
keeps more of the ANN's decisions (``agreement``).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .predictions import Predictions
from .scores import holm, mcnemar_p, paired_interval, per_class


def check_same_samples(reference: Predictions, other: Predictions) -> None:
    """Refuse two evaluations of different samples, or scored one against the labels and the other
    against its ANN, naming the files; warn where their data specs differ though the labels agree
    (the same test set read from two places, or two test sets)."""
    n, m = len(reference.labels), len(other.labels)
    if n != m:
        raise ValueError(f"{other.path} holds {m} samples and {reference.path} {n}: compare evaluations of "
                         "the same data (and --limit)")  # fmt: skip
    indices = reference.index, other.index
    if None not in indices and not torch.equal(*indices):
        raise ValueError(f"{other.path} and {reference.path} evaluated other samples of their data: compare "
                         "evaluations with the same --limit")  # fmt: skip
    scored = [run.about.get("scored_against", "labels") for run in (reference, other)]
    if scored[0] != scored[1]:
        named = {"labels": "the labels", "ann": "its ANN's top-1"}
        first, second = (named.get(value, repr(value)) for value in scored)
        raise ValueError(f"{other.path} was scored against {second} and {reference.path} against {first}: "
                         "compare evaluations scored alike")  # fmt: skip
    differ = (reference.labels != other.labels).nonzero().flatten()
    if len(differ):
        why = (
            "their ANNs decide differently"
            if scored[0] == "ann"
            else "not the same samples in the same order"
        )
        raise ValueError(
            f"{other.path} and {reference.path}: the labels differ at {len(differ)} of {n} samples "
            f"(the first is sample {int(differ[0])}): {why}"
        )
    data = reference.about.get("data"), other.about.get("data")
    if data[0] != data[1]:
        message = f"{other.path} evaluated {data[1]!r} and {reference.path} {data[0]!r}"
        warnings.warn(f"{message}; their labels agree sample by sample, so they are compared", RuntimeWarning,
                      stacklevel=2)  # fmt: skip


def calibration_samples(run: Predictions) -> int | None:
    """How many of ``run``'s samples its network was calibrated on (None: not known), with a
    warning where any were: its side of a comparison was scored on data it had seen."""
    if run.calibration is None:
        return None
    count = int(run.calibration.sum())
    if count:
        warnings.warn(f"{run.path}: {count} of its {len(run.labels)} samples were calibration samples of its "
                      "network: it is scored on data it has seen", RuntimeWarning, stacklevel=2)  # fmt: skip
    return count


def paired_rows(labels: Tensor, first: Tensor, second: Tensor) -> list[dict]:
    """Per column of ``first`` and ``second`` (top-1 classes [N, T], or [N, 1] for one
    prediction each), the two top-1 accuracies (percent), ``difference`` (second - first),
    ``difference_ci95`` (:func:`~transpike.scores.paired_interval`), ``p_value``
    (:func:`~transpike.scores.mcnemar_p`), ``p_holm`` (the p-values adjusted over the columns,
    :func:`~transpike.scores.holm`) and the counts of samples right by ``first_only`` and by
    ``second_only``."""
    right_1, right_2 = first == labels[:, None], second == labels[:, None]
    lost, gained = (right_1 & ~right_2).sum(0).double(), (right_2 & ~right_1).sum(0).double()
    n = len(labels)
    top1_1, top1_2 = 100.0 * right_1.sum(0).double() / n, 100.0 * right_2.sum(0).double() / n
    p = mcnemar_p(lost, gained)
    columns = zip(
        top1_1.tolist(),
        top1_2.tolist(),
        paired_interval(lost, gained, n).tolist(),
        p.tolist(),
        holm(p).tolist(),
        lost.long().tolist(),
        gained.long().tolist(),
        strict=True,
    )
    names = ("first_top1", "second_top1", "difference_ci95", "p_value", "p_holm", "first_only", "second_only")
    return [dict(zip(names, row, strict=True), difference=row[1] - row[0]) for row in columns]


def class_rows(labels: Tensor, first: Tensor, second: Tensor) -> dict[str, list]:
    """Class by class, ``first`` against ``second`` (top-1 classes [N] at one t): per class with
    samples (``classes``, ascending), ``samples``, ``first_top1`` and ``second_top1`` (percent),
    ``difference`` (second - first), ``first_only`` and ``second_only`` (the samples right by one
    of them only), the exact McNemar ``p_value`` and ``p_holm``, adjusted over the classes
    (:func:`~transpike.scores.per_class`, which compares an SNN with its ANN the same way)."""
    table = per_class(labels, first, second[:, None])
    samples = table["samples"]
    first_top1, second_top1 = 100.0 * table["ann_right"] / samples, 100.0 * table["snn_right"][:, 0] / samples
    columns = dict(classes=table["classes"], samples=samples.long(), first_top1=first_top1,
                   second_top1=second_top1, difference=second_top1 - first_top1,
                   first_only=table["lost"].long(), second_only=table["gained"].long(), p_value=table["p"],
                   p_holm=table["p_holm"])  # fmt: skip
    return {name: column.tolist() for name, column in columns.items()}


def differing_options(reference: dict, other: dict) -> dict:
    """The conversion options, model, data, calibration set (``calibration_set``,
    :func:`~transpike.fingerprints.set_digest`) and energy per operation (``e_mac_pj``, ``e_ac_pj``,
    ``e_float_pj``: where they differ, so do the energies compared) two evaluations differ in:
    {name: [reference's, other's]}."""
    named = ("model", "data", "calibration_set", "e_mac_pj", "e_ac_pj", "e_float_pj")
    first = {**reference.get("options", {}), **{k: reference.get(k) for k in named}}
    second = {**other.get("options", {}), **{k: other.get(k) for k in named}}
    return {k: [first.get(k), second.get(k)] for k in sorted(first.keys() | second.keys())
            if first.get(k) != second.get(k)}  # fmt: skip


def compare(reference: Predictions, others: list[Predictions], classes_at: int | None = None) -> dict:
    """Each of ``others`` against ``reference``, sample by sample, at every t both reached, and class
    by class at t = ``classes_at`` (default: the last t both reached).

    Returns:
        dict with ``reference`` (its file, what it evaluated and its ``calibration_samples``,
        :func:`calibration_samples`), ``num_samples`` and, per other evaluation, a ``comparisons``
        entry: ``path``, ``about``, ``calibration_samples``, ``differs`` (the options it
        differs in, :func:`differing_options`), ``same_ann`` (both ANNs predict the same class for
        every sample), ``ann`` (the ANNs compared, :func:`paired_rows`'s dict), ``rows``, one per
        t = 1..min(T, T'), each :func:`paired_rows`'s dict with ``t`` and the two networks' energy
        relative to their ANN's after t steps, ``first_energy`` and ``second_energy`` (the full
        form, :mod:`transpike.energy`; None for an evaluation that did not count spikes),
        ``agreement`` (where the ANNs are the same: the same rows scored against the ANN's top-1
        instead of the labels, so ``first_top1`` is the share of samples whose reference SNN
        decides as the ANN, and the test is of which conversion keeps more of its decisions; None
        where the ANNs differ),
        ``classes_t`` and ``classes``, the two class by class at that t (:func:`class_rows`).

    Raises:
        ValueError: an evaluation of other samples than the reference's, or ``classes_at`` past
            the steps both reached.
    """
    comparisons = []
    for other in others:
        check_same_samples(reference, other)
        steps = min(reference.time_steps, other.time_steps)
        rows = paired_rows(reference.labels, reference.snn[:, :steps], other.snn[:, :steps])
        same_ann = bool(torch.equal(reference.ann, other.ann))
        first, second = (run.about.get("energy_ratio_full") or [None] * steps for run in (reference, other))
        t = steps if classes_at is None else classes_at
        if not 1 <= t <= steps:
            raise ValueError(
                f"classes at t = {t}: {other.path} and {reference.path} both reach t = 1..{steps} only"
            )
        comparisons.append(
            dict(
                path=str(other.path),
                about=other.about,
                calibration_samples=calibration_samples(other),
                differs=differing_options(reference.about, other.about),
                same_ann=same_ann,
                ann=paired_rows(reference.labels, reference.ann[:, None], other.ann[:, None])[0],
                rows=[
                    dict(t=t, **row, first_energy=first[t - 1], second_energy=second[t - 1])
                    for t, row in enumerate(rows, 1)
                ],
                agreement=paired_rows(reference.ann, reference.snn[:, :steps], other.snn[:, :steps])
                if same_ann
                else None,
                classes_t=t,
                classes=class_rows(reference.labels, reference.snn[:, t - 1], other.snn[:, t - 1]),
            )
        )
    return dict(
        reference=dict(
            path=str(reference.path),
            about=reference.about,
            calibration_samples=calibration_samples(reference),
        ),
        num_samples=len(reference.labels),
        comparisons=comparisons,
    )
