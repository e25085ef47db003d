"""What evaluate counts: top-1 and top-5 of the ANN and of the SNN after every t."""

import torch
from conftest import tiny_vit
from torch.utils.data import TensorDataset

import transpike
from transpike.evaluate import correct, evaluate


def test_correct_counts_top1_and_top5():
    logits = torch.tensor([[0.0, 1, 2, 3, 4, 5, 6], [6.0, 5, 4, 3, 2, 1, 0], [0.0, 0, 0, 0, 0, 0, 9]])
    y = torch.tensor([6, 3, 1])  # first in the top, fourth, sixth
    assert correct(logits, y).tolist() == [1, 2]
    assert correct(logits.expand(4, 3, 7), y).tolist() == [[1] * 4, [2] * 4]  # [T, B, C]: per t
    assert correct(logits[:, :3], torch.tensor([2, 1, 0])).tolist() == [2, 3]  # 3 classes: top-3


def test_evaluate_reports_what_simulate_predicts(images):
    calibration, _ = images
    model = tiny_vit(num_classes=10)
    snn = transpike.convert(model, calibration)
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(24, 3, 16, 16, generator=gen), torch.randint(0, 10, (24,), generator=gen)
    results = evaluate(snn, model, TensorDataset(x, y), 6, batch_size=7, progress=False)
    outputs, logits = snn.simulate(x, 6), model(x)
    percent = lambda hits: (100.0 * hits.sum(-1).double() / 24).tolist()  # noqa: E731  (evaluate's formula)
    ranks = (outputs > outputs.gather(-1, y[None, :, None].expand(6, -1, 1))).sum(-1)  # classes above y's
    assert results["snn_top1"] == percent(outputs.argmax(-1) == y)
    assert results["snn_top5"] == percent(ranks < 5)
    assert results["ann_top5"] == percent((logits.topk(5).indices == y[:, None]).any(-1))
    assert all(five >= one for one, five in zip(results["snn_top1"], results["snn_top5"], strict=True))
