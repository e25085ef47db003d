"""Expectation compensation: hand-worked values and the identities of ECMT Theorems 4.1 and 4.2."""

import pytest
import torch
from torch import nn

from transpike import ExpectationCompensation, MTNeuron, SpikingProduct, compensate


class Square(nn.Module):
    def forward(self, x):
        return x * x


def test_compensate_by_hand():
    # O(t) = t·F_t - (t-1)·F_{t-1}
    assert compensate(torch.tensor(3.0), torch.tensor(2.0), 3).item() == pytest.approx(5.0)
    assert compensate(torch.tensor(7.0), None, 1).item() == 7.0


def test_ec_by_hand():
    # F = x², inputs 1, 3, 2: O(1) = F(1) = 1, O(2) = 2·F(2) - 1·F(1) = 7, O(3) = 3·F(2) - 2·F(2) = 4
    ec = ExpectationCompensation(Square())
    assert [ec(torch.tensor(v)).item() for v in (1.0, 3.0, 2.0)] == pytest.approx([1.0, 7.0, 4.0])


class FirstHalf(nn.Module):
    def forward(self, x):
        return x[..., :8]  # a view of the input


# the last three return their input or a view of it, which must not alias the EC's running rate
@pytest.mark.parametrize(
    "f",
    [
        nn.GELU(),
        nn.LayerNorm(16),
        nn.Softmax(dim=-1),
        Square(),
        nn.Identity(),
        nn.Dropout(0.5).eval(),
        FirstHalf(),
    ],
)
def test_ec_sum_equals_t_times_f_of_mean(f):
    gen = torch.Generator().manual_seed(0)
    ec = ExpectationCompensation(f)
    inputs = torch.randn(20, 4, 16, generator=gen, dtype=torch.float64)
    f.double()
    summed = 0
    for t in range(1, 21):
        summed = summed + ec(inputs[t - 1])
        expected = t * f(inputs[:t].mean(0))
        assert torch.allclose(summed, expected, atol=1e-9)


def test_ec_does_not_modify_its_input():
    ec = ExpectationCompensation(nn.GELU())
    x = torch.randn(5)
    keep = x.clone()
    for _ in range(3):
        ec(x)
    assert torch.equal(x, keep)


def test_in_place_module_does_not_corrupt_state():
    ec = ExpectationCompensation(nn.ReLU(inplace=True))
    summed = sum(ec(torch.tensor([v])) for v in (-1.0, 3.0, -1.0))
    assert summed.item() == pytest.approx(3 * max(0.0, 1.0 / 3))


def test_no_compensation_applies_f_per_step():
    ec = ExpectationCompensation(Square(), compensated=False)
    assert [ec(torch.tensor(v)).item() for v in (1.0, 3.0)] == [1.0, 9.0]


def identity_neuron():
    # exact for inputs that are multiples of 1/8 up to 8: every step's spike equals its input
    return MTNeuron(torch.tensor(1 / 8), torch.tensor(1 / 8), levels=7, neuron="burst")


def test_product_ec_by_hand():
    # a: 1, 2; b: 4, 1  ->  A: 1, 3; B: 4, 5;  O(1) = 4, O(2) = A(2)B(2)/2 - A(1)B(1)/1 = 7.5 - 4 = 3.5
    prod = SpikingProduct(identity_neuron(), identity_neuron(), op="mul")
    out = [prod(torch.tensor(a), torch.tensor(b)).item() for a, b in ((1.0, 4.0), (2.0, 1.0))]
    assert out == pytest.approx([4.0, 3.5])


def test_product_ec_identity_and_incremental_rule():
    """Σ O = A(t)·B(t)/t·scale, and the paper's event-driven update K_S gives the same A(t)·B(t)."""
    gen = torch.Generator().manual_seed(1)
    neuron_a = MTNeuron(torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64), 4)
    neuron_b = MTNeuron(torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64), 4)
    prod = SpikingProduct(neuron_a, neuron_b, op="matmul", scale=0.125)
    spikes = {}
    neuron_a.register_forward_hook(lambda m, i, o: spikes.__setitem__("a", o.clone()))
    neuron_b.register_forward_hook(lambda m, i, o: spikes.__setitem__("b", o.clone()))
    a_in = torch.randn(12, 2, 5, 6, generator=gen, dtype=torch.float64)
    b_in = torch.randn(12, 2, 6, 3, generator=gen, dtype=torch.float64)
    summed = torch.zeros(2, 5, 3, dtype=torch.float64)
    sum_a, sum_b = torch.zeros(2, 5, 6, dtype=torch.float64), torch.zeros(2, 6, 3, dtype=torch.float64)
    k_s = torch.zeros(2, 5, 3, dtype=torch.float64)
    for t in range(1, 13):
        summed += prod(a_in[t - 1], b_in[t - 1])
        a, b = spikes["a"], spikes["b"]
        k_s = k_s + a @ b + a @ sum_b + sum_a @ b  # ECMT eq. 17-18
        sum_a, sum_b = sum_a + a, sum_b + b
        assert torch.allclose(k_s, sum_a @ sum_b)
        assert torch.allclose(summed, 0.125 * sum_a @ sum_b / t)


def test_product_without_compensation():
    prod = SpikingProduct(identity_neuron(), identity_neuron(), op="mul", compensated=False)
    out = [prod(torch.tensor(a), torch.tensor(b)).item() for a, b in ((1.0, 4.0), (2.0, 1.0))]
    assert out == [4.0, 2.0]


def test_reset_restarts_at_step_one():
    ec = ExpectationCompensation(Square())
    first = [ec(torch.tensor(v)).item() for v in (1.0, 3.0)]
    ec.reset()
    assert [ec(torch.tensor(v)).item() for v in (1.0, 3.0)] == first
