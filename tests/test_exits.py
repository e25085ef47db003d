"""Early exit: each sample stops at the first t where its output meets a rule."""

import math

import pytest
import torch

from transpike.exits import ExitRule, check_rules, exit_counts, exit_steps, exit_table


def test_a_sample_exits_at_its_first_confident_step():
    # three samples, two classes: confident (p = 0.88) at t = 1; at t = 2 only; never (runs T = 3)
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.1], [0.0, 0.2]],
                           [[0.0, 0.0], [0.0, 3.0], [0.0, 0.1]],
                           [[3.0, 0.0], [0.0, 0.0], [0.3, 0.0]]])  # fmt: skip
    assert exit_steps(logits, (0.8,)).tolist() == [[0, 1, 2]]
    assert exit_steps(logits, (0.5, 1.0)).tolist() == [[0, 0, 0], [2, 2, 2]]
    # exits after t = 1, 2, 3; right at exit: class 0 (right), class 1 (wrong), class 0 at t = 3
    # (right); two classes, so top-5 is always right. The ANN says 0, 0, 1: it alone is right on the
    # second sample, the SNN alone on the third; they give the same class to the first alone
    ann = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    counts = exit_counts(logits, torch.tensor([0, 0, 0]), (0.8,), ann)
    assert counts.tolist() == [[1, 1, 1, 2, 3, 1, 1, 1]]
    (row,) = exit_table(counts, (0.8,), energy_ratio=[0.1, 0.3, 0.6], energy_ratio_full=[0.2, 0.6, 1.2])
    assert row["snn_top1"] == pytest.approx(200 / 3) and row["mean_steps"] == pytest.approx(2.0)
    # one lost, one gained of 3, plus 1/2 in each cell: p_l = p_g = 1.5/5
    assert row["snn_top5"] == 100.0 and row["difference_ci95"] == pytest.approx(196 * (0.6 / 5) ** 0.5)
    assert row["exits"] == pytest.approx([1 / 3] * 3) and row["energy_ratio"] == pytest.approx(1.0 / 3)
    assert row["energy_ratio_full"] == pytest.approx(2.0 / 3)
    assert row["agreement"] == pytest.approx(100 / 3)
    assert "energy_ratio" not in exit_table(counts, (0.8,))[0]


def test_exit_counts_follow_the_rule_sample_by_sample():
    gen = torch.Generator().manual_seed(0)
    outputs = torch.randn(6, 40, 5, generator=gen) * 2
    labels = torch.randint(0, 5, (40,), generator=gen)
    ann = torch.randn(40, 5, generator=gen)
    confidences = (0.3, 0.6, 0.9)
    counts = exit_counts(outputs, labels, confidences, ann)
    probabilities = outputs.softmax(-1)
    for row, c in zip(counts, confidences, strict=True):
        exits, right, right5, lost, gained, same = [0] * 6, 0, 0, 0, 0, 0
        for b in range(40):  # the rule as stated, one sample at a time
            t = next((t for t in range(6) if probabilities[t, b].max() >= c), 5)
            exits[t] += 1
            snn, by_ann = bool(outputs[t, b].argmax() == labels[b]), bool(ann[b].argmax() == labels[b])
            right += snn
            right5 += int(labels[b] in outputs[t, b].topk(5).indices)
            lost, gained = lost + (by_ann and not snn), gained + (snn and not by_ann)
            same += int(outputs[t, b].argmax() == ann[b].argmax())
        assert row.tolist() == [*exits, right, right5, lost, gained, same]


def test_every_rule_follows_its_equation_sample_by_sample():
    gen = torch.Generator().manual_seed(1)
    outputs = torch.randn(6, 50, 4, generator=gen, dtype=torch.float64) * 1.5
    rules = [ExitRule("entropy", 0.6), ExitRule("margin", 0.4), ExitRule("stable", 1), ExitRule("stable", 3)]

    def holds(rule: ExitRule, t: int, b: int) -> bool:  # the rules as the module docstring states them
        p = sorted(math.exp(v) for v in outputs[t, b].tolist())
        p = [v / sum(p) for v in p]
        if rule.kind == "entropy":
            return -sum(v * math.log(v) for v in p) / math.log(4) <= rule.value
        if rule.kind == "margin":
            return p[-1] - p[-2] >= rule.value
        top1 = outputs[:, b].argmax(-1).tolist()
        return t >= rule.value and len(set(top1[t - int(rule.value) : t + 1])) == 1

    expected = [[next((t for t in range(6) if holds(r, t, b)), 5) for b in range(50)] for r in rules]
    assert exit_steps(outputs, rules).tolist() == expected
    assert all(0 < sum(t < 5 for t in row) < 50 for row in expected)  # each rule lets some exit early


def test_a_stable_prediction_exits_once_unchanged_for_s_steps():
    top1 = torch.tensor([[0, 1], [1, 1], [1, 0], [1, 1], [0, 1]])  # [T = 5, B = 2]
    outputs = torch.nn.functional.one_hot(top1, 2).float()
    # sample 0: unchanged from t = 3 on (t = 4 for two steps); sample 1: from t = 2, then changes twice
    rules = [ExitRule("stable", s) for s in (1, 2, 4)]
    assert exit_steps(outputs, rules).tolist() == [[2, 1], [3, 4], [4, 4]]


def test_rules_read_as_they_are_stated():
    assert str(ExitRule("confidence", 0.9)) == "top-1 probability ≥ 0.9"
    assert str(ExitRule("entropy", 0.25)) == "entropy / log C ≤ 0.25"
    assert str(ExitRule("margin", 0.5)) == "top-1 - top-2 probability ≥ 0.5"
    assert str(ExitRule("stable", 2.0)) == "same top-1 as the 2 step(s) before"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (ExitRule("entropy", -0.1), r"entropy thresholds must lie in \[0, 1\], got -0.1"),
        (ExitRule("margin", 1.5), r"margin thresholds must lie in \[0, 1\], got 1.5"),
        (ExitRule("stable", 0), "stable thresholds must be whole numbers ≥ 1, got 0"),
        (ExitRule("stable", 1.5), "stable thresholds must be whole numbers ≥ 1, got 1.5"),
        (
            ExitRule("patience", 2),
            "early-exit rule 'patience': not one of confidence, entropy, margin, stable",
        ),
    ],
)
def test_bad_rules_are_refused_by_name(rule, message):
    with pytest.raises(ValueError, match=message):
        check_rules([0.9, rule])
    assert check_rules([0.9, ExitRule("stable", 2)]) == (ExitRule("confidence", 0.9), ExitRule("stable", 2.0))


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, float("nan")])
def test_confidences_outside_the_unit_interval_are_refused(bad):
    with pytest.raises(ValueError, match=r"early-exit confidence thresholds must lie in \(0, 1\]"):
        check_rules([0.9, bad])
    assert check_rules([0.5, 1]) == (ExitRule("confidence", 0.5), ExitRule("confidence", 1.0))
