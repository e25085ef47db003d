"""What evaluate counts: top-1 and top-5 of the ANN and of the SNN after every t."""

import pytest
import torch
from conftest import tiny_vit
from torch.utils.data import TensorDataset

import transpike
from transpike.data import UNLABELLED
from transpike.evaluate import evaluate
from transpike.exits import exit_counts
from transpike.scores import agreement, correct, matches_from, mcnemar_p, paired_interval, per_class


@pytest.fixture
def setup(images):
    """A converted tiny ViT of 10 classes, its ANN, and 24 random samples with labels."""
    model = tiny_vit(num_classes=10)
    snn = transpike.convert(model, images[0])
    gen = torch.Generator().manual_seed(5)
    return snn, model, torch.randn(24, 3, 16, 16, generator=gen), torch.randint(0, 10, (24,), generator=gen)


def test_correct_counts_top1_and_top5():
    logits = torch.tensor([[0.0, 1, 2, 3, 4, 5, 6], [6.0, 5, 4, 3, 2, 1, 0], [0.0, 0, 0, 0, 0, 0, 9]])
    y = torch.tensor([6, 3, 1])  # first in the top, fourth, sixth
    assert correct(logits, y).tolist() == [1, 2]
    assert correct(logits.expand(4, 3, 7), y).tolist() == [[1] * 4, [2] * 4]  # [T, B, C]: per t
    assert correct(logits[:, :3], torch.tensor([2, 1, 0])).tolist() == [2, 3]  # 3 classes: top-3


def test_the_paired_interval_counts_only_disagreements():
    # 100 samples: the SNN loses 3 the ANN gets right and gains 1; with 1/2 added to each cell of
    # the paired table (n + 2 = 102), p_l = 3.5/102 and p_g = 1.5/102
    p_l, p_g = 3.5 / 102, 1.5 / 102
    half = paired_interval(torch.tensor([3.0]), torch.tensor([1.0]), 100)
    assert half.item() == pytest.approx(196 * ((p_l + p_g - (p_g - p_l) ** 2) / 102) ** 0.5)
    # no disagreement at all still leaves an interval, about one sample in 100 either way
    assert paired_interval(torch.tensor([0.0]), torch.tensor([0.0]), 100).item() == pytest.approx(196 / 102)
    # ten times the samples in the same shares: an interval √10 times narrower
    wide, narrow = (
        paired_interval(torch.tensor([k * 30.0]), torch.tensor([k * 10.0]), k * 1000) for k in (1, 10)
    )
    assert (wide / narrow).item() == pytest.approx(10**0.5, rel=0.01)


def test_evaluate_reports_what_simulate_predicts(setup):
    snn, model, x, y = setup
    results = evaluate(snn, model, TensorDataset(x, y), 6, batch_size=7, progress=False)
    outputs, logits = snn.simulate(x, 6), model(x)
    percent = lambda hits: (100.0 * hits.sum(-1).double() / 24).tolist()  # noqa: E731  (evaluate's formula)
    ranks = (outputs > outputs.gather(-1, y[None, :, None].expand(6, -1, 1))).sum(-1)  # classes above y's
    assert results["snn_top1"] == percent(outputs.argmax(-1) == y)
    assert results["snn_top5"] == percent(ranks < 5)
    assert results["ann_top5"] == percent((logits.topk(5).indices == y[:, None]).any(-1))
    assert all(five >= one for one, five in zip(results["snn_top1"], results["snn_top5"], strict=True))
    right, ann_right = outputs.argmax(-1) == y, logits.argmax(-1) == y
    lost, gained = (ann_right & ~right).sum(-1).double(), (right & ~ann_right).sum(-1).double()
    assert results["difference_ci95"] == paired_interval(lost, gained, 24).tolist()
    differences = [top1 - results["ann_top1"] for top1 in results["snn_top1"]]
    assert results["matches_ann_from"] == matches_from(differences, results["difference_ci95"])
    assert results["agreement"] == percent(outputs.argmax(-1) == logits.argmax(-1))


def test_evaluate_against_the_ann_scores_agreement_and_needs_no_labels(setup):
    snn, model, x, y = setup
    results = evaluate(snn, model, TensorDataset(x, y), 4, batch_size=7, progress=False, against_ann=True)
    assert results["ann_top1"] == results["ann_top5"] == 100.0 and results["scored_against"] == "ann"
    assert results["snn_top1"] == results["agreement"]
    unlabelled = TensorDataset(x, torch.full_like(y, UNLABELLED))
    again = evaluate(snn, model, unlabelled, 4, batch_size=7, progress=False, energy=False, against_ann=True)
    assert again["snn_top1"] == results["snn_top1"]  # the labels are not read
    with pytest.raises(ValueError, match="samples without labels: score them against the ANN's top-1"):
        evaluate(snn, model, unlabelled, 2, progress=False, energy=False)


def test_agreement_sees_what_equal_accuracies_hide():
    # 4 samples of 3 classes: after t = 2 the SNN loses sample 0 and gains sample 1, so its top-1
    # equals the ANN's, yet it decides half of the samples differently
    y = torch.tensor([0, 1, 2, 0])
    logits = torch.eye(3)[[0, 2, 2, 1]] * 5  # the ANN: right on samples 0 and 2
    outputs = torch.stack([logits, torch.eye(3)[[1, 1, 2, 1]]])  # [T = 2, B, C]
    assert correct(outputs, y)[0].tolist() == [2, 2] and correct(logits, y)[0] == 2
    assert agreement(logits, outputs).tolist() == [4, 2]


def test_matches_from_is_the_first_t_of_the_last_run_of_intervals_holding_zero():
    assert matches_from([-9.0, -0.5, -3.0, 0.4, -0.2], [1.0] * 5) == 4  # t = 2 alone does not count
    assert matches_from([-9.0, -0.5, -0.5], [1.0, 1.0, 0.4]) is None  # not at T
    assert matches_from([0.0, 0.0], [0.5, 0.5]) == 1
    assert matches_from([-1.0], [1.0]) == 1  # on the interval's edge: it holds 0


def test_evaluate_reads_the_early_exits_from_the_same_run(setup):
    snn, model, x, y = setup
    data = TensorDataset(x, y)
    results = evaluate(snn, model, data, 5, batch_size=7, progress=False, exits=(0.01, 1.0))
    low, high = results["early_exit"]
    # c below every probability: all exit after one step; c = 1 is never reached: all run T steps
    for row, t in ((low, 0), (high, -1)):  # the same scores as the fixed t
        for key in ("snn_top1", "snn_top5", "difference_ci95"):
            assert row[key] == results[key][t]
    assert low["mean_steps"] == 1.0 and high["mean_steps"] == 5.0
    assert low["energy_ratio"] == results["energy"].ratio["ecmt"][0]
    assert low["energy_ratio_full"] == results["energy"].ratio["full"][0]
    assert high["energy_ratio"] == pytest.approx(results["energy"].ratio["ecmt"][-1])
    counts = exit_counts(snn.simulate(x, 5), y, (0.3, 0.5), model(x))
    rows = evaluate(snn, model, data, 5, batch_size=24, progress=False, exits=(0.3, 0.5),
                    energy=False)["early_exit"]  # fmt: skip
    assert [row["snn_top1"] for row in rows] == (
        100.0 * counts[:, 5] / 24
    ).tolist()  # after the T exit counts
    assert [row["agreement"] for row in rows] == (100.0 * counts[:, -1] / 24).tolist()
    assert all("energy_ratio" not in row for row in rows)
    no_exits = evaluate(snn, model, data, 2, progress=False, energy=False, exits=())
    assert "early_exit" not in no_exits


def test_per_class_counts_each_class_apart():
    gen = torch.Generator().manual_seed(2)
    labels = torch.tensor([0, 0, 0, 2, 2, 5, 5, 5, 5])  # classes 1, 3 and 4 have no sample
    ann = torch.where(torch.rand(9, generator=gen) < 0.8, labels, (labels + 1) % 6)
    snn = torch.where(torch.rand(9, 3, generator=gen) < 0.6, labels[:, None], 3)
    table = per_class(labels, ann, snn)
    assert table["classes"].tolist() == [0, 2, 5] and table["samples"].tolist() == [3, 2, 4]
    for i, c in enumerate((0, 2, 5)):  # one class at a time, as stated
        mine = labels == c
        assert table["ann_right"][i] == (ann[mine] == c).sum()
        assert table["snn_right"][i].tolist() == (snn[mine] == c).sum(0).tolist()
        lost = ((ann[mine] == c) & (snn[mine, -1] != c)).sum().item()
        gained = ((ann[mine] != c) & (snn[mine, -1] == c)).sum().item()
        assert (table["lost"][i], table["gained"][i]) == (lost, gained)
        assert table["p"][i] == mcnemar_p(torch.tensor(lost), torch.tensor(gained))
    assert (table["p_holm"] >= table["p"]).all()
