"""Early exit: each sample stops at the first step where its prediction passes a rule.

One simulation gives the SNN's output after every t ≤ T, so the accuracy of an early-exit rule
costs no further run. A sample exits after step

    t* = min{t : the rule holds for ȳ(t)},   or T if it holds for no t,

where ȳ(t) is the SNN's output after t steps (the running mean of the head's output, as
:meth:`~transpike.SpikingModel.simulate` returns it), and its prediction is argmax ȳ(t*). With
p(t) = softmax(ȳ(t)) over C classes, the rules are those of the SNN early-exit literature:

- ``confidence`` c: max_k p_k(t) ≥ c (SEENN's confidence-score thresholding, Li et al., NeurIPS 2023);
- ``entropy`` h: -Σ_k p_k(t) log p_k(t) / log C ≤ h (DT-SNN's entropy of the accumulated output,
  Li et al., DAC 2023, here divided by log C so that h lies in [0, 1] for any number of classes);
- ``margin`` m: the two largest p_k(t) differ by at least m (SNNCutoff's top-K cutoff, Wu et al.
  2023, which thresholds the gap between the two largest outputs; on probabilities m lies in [0, 1]);
- ``stable`` s: argmax ȳ(t) is that of the s steps before, argmax ȳ(t - s) = ... = argmax ȳ(t)
  (so t* > s); it needs no softmax, and no scale of the outputs.

A network whose output stays close to the ANN's from the first steps lets most samples exit early,
so its mean number of steps is well below T at the accuracy of a fixed T.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .scores import agreement, correct, disagreements, paired_interval


def confidence(outputs: Tensor) -> Tensor:
    """max_k softmax(ȳ(t))_k, the top-1 probability: [T, B] from outputs [T, B, C]."""
    return outputs.softmax(-1).amax(-1)


def entropy(outputs: Tensor) -> Tensor:
    """-Σ_k p_k log p_k / log C with p = softmax(ȳ(t)), in [0, 1]: [T, B] from outputs [T, B, C]."""
    p = outputs.softmax(-1)
    return -(p * outputs.log_softmax(-1)).sum(-1) / math.log(outputs.shape[-1])


def margin(outputs: Tensor) -> Tensor:
    """p_(1) - p_(2), the top-1 probability's lead over the second's: [T, B] from outputs [T, B, C]."""
    top = outputs.softmax(-1).topk(2, -1).values
    return top[..., 0] - top[..., 1]


def unchanged(outputs: Tensor) -> Tensor:
    """For how many steps before t the top-1 class has been that of step t: [T, B] (0 where it
    changed at t, and at t = 1)."""
    top1 = outputs.argmax(-1)  # [T, B]
    steps = torch.arange(len(top1), device=top1.device)[:, None].expand_as(top1)
    changed = torch.ones_like(top1, dtype=torch.bool)
    changed[1:] = top1[1:] != top1[:-1]
    last_change = torch.where(changed, steps, 0).cummax(0).values  # the latest t' ≤ t with a change
    return steps - last_change


@dataclass(frozen=True)
class Kind:
    """A kind of rule: the measure of ȳ(t) it thresholds, whether the measure must fall to the
    threshold (``at_most``) or rise to it, which thresholds are valid, and how the rule reads."""

    measure: Callable[[Tensor], Tensor]
    at_most: bool
    valid: Callable[[float], bool]
    allowed: str
    reads: str


def _probability(value: float) -> bool:
    return 0.0 <= value <= 1.0


RULES = {
    "confidence": Kind(
        confidence, False, lambda v: 0.0 < v <= 1.0, "lie in (0, 1]", "top-1 probability ≥ {:g}"
    ),
    "entropy": Kind(entropy, True, _probability, "lie in [0, 1]", "entropy / log C ≤ {:g}"),
    "margin": Kind(margin, False, _probability, "lie in [0, 1]", "top-1 - top-2 probability ≥ {:g}"),
    "stable": Kind(
        unchanged, False, lambda v: v >= 1 and v.is_integer(), "be whole numbers ≥ 1",
        "same top-1 as the {:g} step(s) before",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class ExitRule:
    """One early-exit rule: its ``kind`` (a key of :data:`RULES`) and its threshold ``value``."""

    kind: str
    value: float

    def __str__(self) -> str:
        return RULES[self.kind].reads.format(self.value)

    def holds(self, measured: Tensor) -> Tensor:
        """Whether the rule holds, given its kind's measure of the outputs (``RULES[kind].measure``)."""
        return measured <= self.value if RULES[self.kind].at_most else measured >= self.value


# the default rules: confidence thresholds c, and a top-1 unchanged for s steps (on the digits ViT
# with the paper's thresholds, the rule that comes nearest the ANN in the fewest steps)
CONFIDENCES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
STABLE = (1, 2, 3)
EXITS = tuple(ExitRule("confidence", c) for c in CONFIDENCES) + tuple(ExitRule("stable", s) for s in STABLE)


def check_rules(rules: Sequence[ExitRule | float]) -> tuple[ExitRule, ...]:
    """The rules as a tuple of :class:`ExitRule` with float values (a bare number is a confidence
    threshold c).

    Raises:
        ValueError: a kind not in :data:`RULES`, or a value outside its kind's range: confidence
            in (0, 1] (a probability a sample can reach), entropy and margin in [0, 1], stable a
            whole number of steps ≥ 1.
    """
    rules = tuple(rule if isinstance(rule, ExitRule) else ExitRule("confidence", rule) for rule in rules)
    for rule in rules:
        if rule.kind not in RULES:
            raise ValueError(f"early-exit rule {rule.kind!r}: not one of {', '.join(RULES)}")
        kind = RULES[rule.kind]
        if not kind.valid(float(rule.value)):
            raise ValueError(f"early-exit {rule.kind} thresholds must {kind.allowed}, got {rule.value}")
    return tuple(ExitRule(rule.kind, float(rule.value)) for rule in rules)


def exit_steps(outputs: Tensor, rules: Sequence[ExitRule | float]) -> Tensor:
    """t* - 1 for every rule and sample: [R, B] indices into the T steps.

    Args:
        outputs: the SNN's outputs after t = 1..T, [T, B, classes].
        rules: the rules (a bare number is a confidence threshold c).
    """
    rules = check_rules(rules)
    measured = {kind: RULES[kind].measure(outputs) for kind in {rule.kind for rule in rules}}  # once each
    reached = torch.empty(len(rules), *outputs.shape[:2], dtype=torch.bool, device=outputs.device)
    for index, rule in enumerate(rules):
        reached[index] = rule.holds(measured[rule.kind])
    reached[:, -1] = True  # the rule held at no step: the sample runs all T steps
    return reached.to(torch.uint8).argmax(1)  # the first step where it held (argmax takes the first)


SCORES = 5  # counts per rule after its exits: top-1, top-5, right by the ANN only, by the SNN only, agreeing


def exit_counts(outputs: Tensor, labels: Tensor, rules: Sequence[ExitRule | float], logits: Tensor) -> Tensor:
    """Per rule, counts of the samples: exiting after t = 1..T steps, then right at their exit step
    (top-1, top-5), then right only by the ANN and only by the SNN (top-1; for the paired interval,
    :func:`~transpike.scores.paired_interval`), then those whose top-1 at their exit step is the
    ANN's: [R, T + SCORES].

    Args:
        outputs: the SNN's outputs after t = 1..T, [T, B, classes].
        labels: the samples' classes, [B].
        rules: the rules (a bare number is a confidence threshold c).
        logits: the ANN's outputs, [B, classes].
    """
    steps = exit_steps(outputs, rules)  # [R, B]
    chosen = outputs.gather(0, steps[..., None].expand(-1, -1, outputs.shape[-1]))  # [R, B, classes]
    exited = torch.nn.functional.one_hot(steps, outputs.shape[0]).sum(1)  # [R, T]
    scores = torch.cat(
        [correct(chosen, labels), disagreements(logits, chosen, labels), agreement(logits, chosen)[None]]
    )  # [SCORES, R]
    return torch.cat([exited, scores.T], 1).to(torch.float64)


def exit_table(
    counts: Tensor,
    rules: Sequence[ExitRule | float],
    energy_ratio: list[float] | None = None,
    energy_ratio_full: list[float] | None = None,
) -> list[dict]:
    """The results of :func:`exit_counts` summed over all samples, one dict per rule: ``rule`` (its
    kind) and ``value``, ``snn_top1`` and ``snn_top5`` (percent), ``difference_ci95`` (the
    half-width of the 95 % interval of SNN top-1 - ANN top-1), ``agreement`` (percent of samples
    whose top-1 at their exit step is the ANN's), ``mean_steps`` (the mean of t*),
    ``exits`` (share of samples exiting after t = 1..T) and, given the energy after every t,
    ``energy_ratio``: Σ_t share(t)·E(t), the average sample's energy after its exit step (an
    estimate: samples that exit early may spike less or more than the average one); the same of
    the full form's energy as ``energy_ratio_full`` (:mod:`transpike.energy`).
    """
    samples = int(counts[0, :-SCORES].sum())
    rows = []
    for rule, row in zip(check_rules(rules), counts, strict=True):
        share, (top1, top5, lost, gained, same) = row[:-SCORES] / samples, row[-SCORES:]
        steps = torch.arange(1, share.numel() + 1, dtype=share.dtype)
        entry = dict(
            rule=rule.kind,
            value=rule.value,
            snn_top1=(100.0 * top1 / samples).item(),
            snn_top5=(100.0 * top5 / samples).item(),
            difference_ci95=paired_interval(lost, gained, samples).item(),
            agreement=(100.0 * same / samples).item(),
            mean_steps=(share * steps).sum().item(),
            exits=share.tolist(),
        )
        for key, energy in (("energy_ratio", energy_ratio), ("energy_ratio_full", energy_ratio_full)):
            if energy is not None:
                entry[key] = (share * torch.tensor(energy, dtype=share.dtype)).sum().item()
        rows.append(entry)
    return rows
