"""Bounded-memory calibration histograms and the threshold rules read from them."""

import pytest
import torch

from transpike.observers import NUM_BINS, HistogramObserver, bin_edges, bin_index
from transpike.thresholds import mse_thresholds, percentile_thresholds, rate_error


def test_bins_are_ordered_by_value():
    x = torch.tensor([-1e9, -3.0, -1e-30, 0.0, 1e-30, 0.5, 3.0, 1e9])
    index = bin_index(x)
    assert index.tolist() == sorted(index.tolist())
    assert index[3] == NUM_BINS // 2  # exact zero has its own bin
    lower, upper = bin_edges()
    inside = (lower[index[1:-1]] <= x[1:-1]) & (x[1:-1] <= upper[index[1:-1]])
    assert inside[[0, 2, 3, 4, 5]].all()  # ±3.0 and ±0.5 sit inside their bin's edges


@pytest.mark.parametrize("q", [1.0, 5.0, 50.0, 95.0, 99.0, 99.9])
def test_percentile_matches_exact_quantile(q):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, generator=gen) * 2 + 0.3
    observer = HistogramObserver()
    observer(x)
    exact = torch.quantile(x, q / 100)
    assert observer.percentile(q).item() == pytest.approx(exact.item(), rel=0.01, abs=0.01)


def test_memory_is_bounded_and_batching_does_not_matter():
    gen = torch.Generator().manual_seed(1)
    data = torch.randn(40, 64, 8, generator=gen).exp()
    one, many = HistogramObserver((-1,)), HistogramObserver((-1,))
    one(data)
    for batch in data:
        many(batch)
    assert one.counts.shape == many.counts.shape == (8, NUM_BINS)
    assert torch.equal(one.counts, many.counts)
    assert many.batches == 40


def test_per_channel_percentiles():
    gen = torch.Generator().manual_seed(2)
    scale = torch.tensor([0.01, 1.0, 100.0])
    x = torch.randn(4, 5000, 3, generator=gen) * scale
    observer = HistogramObserver((-1,))
    observer(x)
    p99 = observer.percentile(99.0)
    assert p99.shape == (3,)
    exact = torch.quantile(x.reshape(-1, 3), 0.99, dim=0)
    assert torch.allclose(p99, exact, rtol=0.02)


def test_channel_dims_of_attention_operands():
    observer = HistogramObserver((-3, -1))
    observer(torch.randn(2, 4, 7, 5))  # [batch, heads, tokens, head_dim]
    assert observer.channel_shape == (4, 1, 5)
    assert observer.percentile(50.0).shape == (4, 1, 5)


def test_non_finite_activation_is_reported():
    observer = HistogramObserver(path="blocks.0.mlp.fc1")
    with pytest.raises(ValueError, match=r"blocks\.0\.mlp\.fc1"):
        observer(torch.tensor([1.0, float("nan")]))


def test_percentile_thresholds_of_one_sided_site():
    observer = HistogramObserver()
    observer(torch.rand(10000) * 0.1 + 0.01)  # all positive, like attention probabilities
    theta_pos, theta_neg = percentile_thresholds(observer, 99.0)
    assert theta_pos.item() == pytest.approx(0.109, rel=0.02)
    assert theta_neg.item() == theta_pos.item()  # the empty side borrows the other's


def test_rate_error_is_membrane_over_t():
    # constant input 0.3 with θ = 1: v = 0.3, -0.4, -0.1, 0.2 -> mean of (v/t)² over 4 steps
    error = rate_error(torch.tensor([0.3], dtype=torch.float64), torch.tensor(1.0), 2, "greedy", "mt", 4)
    expected = (0.3**2 + (0.4 / 2) ** 2 + (0.1 / 3) ** 2 + (0.2 / 4) ** 2) / 4
    assert error.item() == pytest.approx(expected)


def test_mse_thresholds_beat_percentile_on_their_objective():
    gen = torch.Generator().manual_seed(3)
    observer = HistogramObserver()
    x = torch.randn(50_000, generator=gen)
    observer(x)
    mse_pos, mse_neg = mse_thresholds(observer, 99.0, 8, "nearest", "mt", 4)
    pct_pos, _ = percentile_thresholds(observer, 99.0)
    assert 0 < mse_pos < pct_pos
    assert mse_neg > 0
    sample = x[:5000].abs().double()
    assert (
        rate_error(sample, mse_pos, 8, "nearest", "mt", 4).mean()
        < rate_error(sample, pct_pos, 8, "nearest", "mt", 4).mean()
    )
    # the top level covers twice the largest value seen
    assert mse_pos * 2**7 >= 2 * x.max()
