"""Property-based tests (hypothesis) of the MT neuron and the EC identities."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from transpike import ExpectationCompensation, MTNeuron, SpikingProduct, mt_fire
from transpike.synapses import level_values

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)
thresholds = st.floats(0.01, 10.0)


@settings(max_examples=60, deadline=None)
@given(
    shape=shapes,
    theta_pos=thresholds,
    theta_neg=thresholds,
    levels=st.integers(1, 10),
    scale=st.floats(0.01, 1000.0),
    seed=st.integers(0, 2**31 - 1),
    rounding=st.sampled_from(["greedy", "nearest"]),
)
def test_mt_output_is_one_signed_level(shape, theta_pos, theta_neg, levels, scale, seed, rounding):
    m = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    tp, tn = torch.tensor(theta_pos, dtype=torch.float64), torch.tensor(theta_neg, dtype=torch.float64)
    x = mt_fire(m, tp, tn, levels, rounding)
    lam = level_values(tp, tn, levels)
    is_level = (x.unsqueeze(-1) - lam).abs().min(-1).values <= 1e-12 * lam.abs().max()
    assert (is_level | (x == 0)).all()
    fires = (m >= tp / 2) | (m <= -tn / 2)
    assert torch.equal(x != 0, fires)
    assert (torch.sign(x) == torch.sign(m))[fires].all()


@settings(max_examples=40, deadline=None)
@given(
    shape=shapes,
    theta=thresholds,
    levels=st.integers(1, 8),
    steps=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
    neuron=st.sampled_from(["mt", "burst"]),
)
def test_spike_sum_tracks_input_sum(shape, theta, levels, steps, seed, neuron):  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    currents = torch.randn(steps, *shape, generator=gen, dtype=torch.float64) * 3 * theta
    cell = MTNeuron(torch.tensor(theta), torch.tensor(theta), levels, neuron=neuron)
    emitted = sum(cell(current) for current in currents)
    # reset by subtraction: Σ x(τ) = Σ I(τ) - v(t), exactly up to rounding
    assert torch.allclose(emitted, currents.sum(0) - cell.v, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 4),
    width=st.integers(1, 8),
    steps=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
    which=st.sampled_from(["gelu", "layernorm", "softmax", "tanh"]),
)
def test_ec_sum_is_t_times_f_of_rate(batch, width, steps, seed, which):  # fmt: skip
    f = {"gelu": nn.GELU(), "layernorm": nn.LayerNorm(width), "softmax": nn.Softmax(-1), "tanh": nn.Tanh()}[
        which
    ]
    f.double()
    inputs = torch.randn(
        steps, batch, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    ec = ExpectationCompensation(f)
    total = sum(ec(x) for x in inputs)
    with torch.no_grad():
        assert torch.allclose(total, steps * f(inputs.mean(0)), atol=1e-8)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 4),
    p=st.integers(1, 4),
    m=st.integers(1, 4),
    steps=st.integers(1, 10),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.01, 2.0),
)
def test_product_ec_sum_is_product_of_sums_over_t(n, p, m, steps, seed, scale):  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    a_in = torch.randn(steps, n, p, generator=gen, dtype=torch.float64)
    b_in = torch.randn(steps, p, m, generator=gen, dtype=torch.float64)
    cells = [
        MTNeuron(torch.tensor(0.2), torch.tensor(0.3), 6),
        MTNeuron(torch.tensor(0.25), torch.tensor(0.1), 6),
    ]
    product = SpikingProduct(*cells, op="matmul", scale=scale)
    spikes_a, spikes_b = [], []
    cells[0].register_forward_hook(lambda mod, i, o: spikes_a.append(o.clone()))
    cells[1].register_forward_hook(lambda mod, i, o: spikes_b.append(o.clone()))
    total = sum(product(a, b) for a, b in zip(a_in, b_in, strict=True))
    expected = scale * sum(spikes_a) @ sum(spikes_b) / steps
    assert torch.allclose(total, expected, atol=1e-9)
