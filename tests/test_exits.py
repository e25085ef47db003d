"""Early exit: each sample stops at the first t where its top-1 probability reaches c."""

import pytest
import torch

from transpike.exits import check_confidences, exit_counts, exit_steps, exit_table


def test_a_sample_exits_at_its_first_confident_step():
    # three samples, two classes: confident (p = 0.88) at t = 1; at t = 2 only; never (runs T = 3)
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.1], [0.0, 0.2]],
                           [[0.0, 0.0], [0.0, 3.0], [0.0, 0.1]],
                           [[3.0, 0.0], [0.0, 0.0], [0.3, 0.0]]])  # fmt: skip
    assert exit_steps(logits, (0.8,)).tolist() == [[0, 1, 2]]
    assert exit_steps(logits, (0.5, 1.0)).tolist() == [[0, 0, 0], [2, 2, 2]]
    # exits after t = 1, 2, 3; right at exit: class 0 (right), class 1 (wrong), class 0 at t = 3
    # (right); two classes, so top-5 is always right. The ANN says 0, 0, 1: it alone is right on the
    # second sample, the SNN alone on the third
    ann = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    counts = exit_counts(logits, torch.tensor([0, 0, 0]), (0.8,), ann)
    assert counts.tolist() == [[1, 1, 1, 2, 3, 1, 1]]
    (row,) = exit_table(counts, (0.8,), energy_ratio=[0.1, 0.3, 0.6])
    assert row["snn_top1"] == pytest.approx(200 / 3) and row["mean_steps"] == pytest.approx(2.0)
    # one lost, one gained of 3, plus 1/2 in each cell: p_l = p_g = 1.5/5
    assert row["snn_top5"] == 100.0 and row["difference_ci95"] == pytest.approx(196 * (0.6 / 5) ** 0.5)
    assert row["exits"] == pytest.approx([1 / 3] * 3) and row["energy_ratio"] == pytest.approx(1.0 / 3)
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
        exits, right, right5, lost, gained = [0] * 6, 0, 0, 0, 0
        for b in range(40):  # the rule as stated, one sample at a time
            t = next((t for t in range(6) if probabilities[t, b].max() >= c), 5)
            exits[t] += 1
            snn, by_ann = bool(outputs[t, b].argmax() == labels[b]), bool(ann[b].argmax() == labels[b])
            right += snn
            right5 += int(labels[b] in outputs[t, b].topk(5).indices)
            lost, gained = lost + (by_ann and not snn), gained + (snn and not by_ann)
        assert row.tolist() == [*exits, right, right5, lost, gained]


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, float("nan")])
def test_confidences_outside_the_unit_interval_are_refused(bad):
    with pytest.raises(ValueError, match=r"early-exit confidences must lie in \(0, 1\]"):
        check_confidences([0.9, bad])
    assert check_confidences([0.5, 1]) == (0.5, 1.0)
