"""The MT neuron against values worked out by hand and against the paper's level-by-level rule."""

import functools
import types

import pytest
import torch
from conftest import DEVICES

from transpike import FusionError, MTNeuron, burst_fire, fusion, mt_fire, spike_planes
from transpike.fusion import fused
from transpike.neurons import _pow2_floor_, _signed_threshold, charge_fire_reset, fire_both
from transpike.synapses import level_values

T1, T2 = torch.tensor(1.0), torch.tensor(0.5)  # θ1 = 1, θ2 = 0.5; n = 3: levels 1, 2, 4 and -0.5, -1, -2


def fire(values, rounding="greedy", levels=3):
    return mt_fire(torch.tensor(values), T1, T2, levels, rounding).tolist()


def test_greedy_levels_by_hand():
    # fire the largest λ_k with λ_k - θ/2 <= m; nothing inside (-θ2/2, θ1/2)
    m = [0.0, 0.49, 0.5, 1.4, 1.5, 3.0, 3.49, 3.5, 100.0, -0.24, -0.25, -0.74, -0.75, -1.75, -50.0]
    x = [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 4.0, 4.0, 0.0, -0.5, -0.5, -1.0, -2.0, -2.0]
    assert fire(m) == x


def test_nearest_levels_by_hand():
    # nearest level, same firing condition |m| >= θ/2
    m = [0.49, 0.5, 0.74, 1.49, 1.51, 2.9, 3.0, 5.9, -0.3, -0.76, -1.6]
    x = [0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -0.5, -1.0, -2.0]
    assert fire(m, "nearest") == x


def test_single_level_is_signed_if_neuron():
    assert fire([0.4, 0.6, 7.0, -0.2, -0.3, -9.0], levels=1) == [0.0, 1.0, 1.0, 0.0, -0.5, -0.5]


def test_burst_by_hand():
    x = burst_fire(torch.tensor([0.4, 0.5, 5.4, 5.5, 30.0, -0.3, -1.3]), T1, T2, 3).tolist()
    assert x == [0.0, 1.0, 5.0, 6.0, 7.0, -0.5, -1.5]


def reference_greedy(m, theta_pos, theta_neg, levels):
    """ECMT's rule as the paper states it: try levels from the top, fire the first that passes."""
    x = torch.zeros_like(m)
    fired = torch.zeros_like(m, dtype=torch.bool)
    for k in reversed(range(levels)):
        up, down = theta_pos * 2**k, theta_neg * 2**k
        pos = ~fired & (m >= up - theta_pos / 2)
        neg = ~fired & (-m >= down - theta_neg / 2)
        x = torch.where(pos, up, torch.where(neg, -down, x))
        fired |= pos | neg
    return x


@pytest.mark.parametrize("levels", [1, 2, 4, 8])
def test_closed_form_equals_level_loop(levels):
    gen = torch.Generator().manual_seed(levels)
    m = torch.randn(20000, generator=gen, dtype=torch.float64) * 40
    theta_pos, theta_neg = torch.tensor(0.37, dtype=torch.float64), torch.tensor(0.81, dtype=torch.float64)
    x, expected = mt_fire(m, theta_pos, theta_neg, levels), reference_greedy(m, theta_pos, theta_neg, levels)
    # same spike everywhere; the amplitude may differ by one rounding (θ(m) is formed arithmetically)
    assert torch.equal(torch.sign(x), torch.sign(expected))
    assert torch.allclose(x, expected, rtol=1e-15, atol=0)


def test_nearest_minimizes_distance_among_levels():
    m = torch.linspace(-20, 20, 8001, dtype=torch.float64)
    x = mt_fire(m, T1.double(), T2.double(), 4, "nearest")
    fires = m.abs() >= torch.where(m >= 0, 0.5, 0.25)
    lam = level_values(T1.double(), T2.double(), 4)
    best = (m[:, None] - lam[None]).abs().min(1).values
    assert torch.allclose((m - x).abs()[fires], best[fires])
    assert (x[~fires] == 0).all()


SQRT2 = 2**0.5


def test_levels_per_octave_by_hand():
    # s = 2, n = 4: levels 1, √2, 2, 2√2 (θ1 = 1), -0.5, -0.5√2, -1, -√2 (θ2 = 0.5). Greedy fires
    # the largest λ_k with λ_k - θ/2 <= m (boundaries 0.5, 0.914, 1.5, 2.33); nearest the closest
    # level (midpoints 1.207, 1.707, 2.414), both nothing inside (-θ2/2, θ1/2)
    m = [0.49, 0.5, 0.9, 0.92, 1.2, 1.22, 1.6, 1.72, 2.4, 2.5, 100.0, -0.24, -0.26, -0.5, -0.8]
    greedy = [0, 1, 1, SQRT2, SQRT2, SQRT2, 2, 2, 2 * SQRT2, 2 * SQRT2, 2 * SQRT2, 0, -0.5, -SQRT2 / 2, -1]
    nearest = [0, 1, 1, 1, 1, SQRT2, SQRT2, 2, 2, 2 * SQRT2, 2 * SQRT2, 0, -0.5, -0.5, -SQRT2 / 2]
    for rounding, expected in (("greedy", greedy), ("nearest", nearest)):
        x = mt_fire(torch.tensor(m, dtype=torch.float64), T1.double(), T2.double(), 4, rounding, 2)
        assert x.tolist() == pytest.approx(expected, rel=1e-12), rounding


@pytest.mark.parametrize("per_octave", [2, 3, 4])
def test_levels_per_octave_follow_the_rules_level_by_level(per_octave):
    # the closed form (a logarithm) against the rules applied level by level: greedy, the largest
    # λ_k with λ_k - θ/2 <= |m|; nearest, the closest λ_k; both when |m| >= θ/2, capped at the top
    gen = torch.Generator().manual_seed(per_octave)
    m = torch.randn(20000, generator=gen, dtype=torch.float64) * 20
    theta_pos, theta_neg = torch.tensor(0.37, dtype=torch.float64), torch.tensor(0.81, dtype=torch.float64)
    levels = 5 * per_octave + 1
    lam = level_values(theta_pos, theta_neg, levels, per_octave)
    theta = torch.where(m >= 0, theta_pos, theta_neg)
    fires = m.abs() >= theta / 2
    same_side = torch.sign(lam)[None] == torch.sign(m)[:, None]
    passes = same_side & (lam.abs()[None] - theta[:, None] / 2 <= m.abs()[:, None])
    greedy = torch.where(passes, lam.abs()[None], 0).max(1).values * torch.sign(m)
    distance = torch.where(same_side, (m[:, None] - lam[None]).abs(), torch.inf)
    nearest = lam[distance.argmin(1)]
    for rounding, expected in (("greedy", greedy), ("nearest", nearest)):
        x = mt_fire(m, theta_pos, theta_neg, levels, rounding, per_octave)
        assert torch.allclose(x[fires], expected[fires], rtol=1e-12, atol=0), rounding
        assert (x[~fires] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtypes_agree_with_float32(dtype):
    m = torch.tensor([0.5, 1.5, 3.0, 6.0, 100.0, -0.25, -0.75, -3.0])
    expected = mt_fire(m, T1, T2, 4)
    assert torch.equal(mt_fire(m.to(dtype), T1.to(dtype), T2.to(dtype), 4).float(), expected)


def test_neuron_dynamics_by_hand():
    # θ = 1, constant input 0.3: m = 0.3, 0.6 (fire 1, v = -0.4), -0.1, 0.2, 0.5 (fire 1), ...
    cell = MTNeuron(torch.tensor(1.0), torch.tensor(1.0), levels=2)
    out = [cell(torch.tensor([0.3])).item() for _ in range(6)]
    assert out == pytest.approx([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    assert cell.v.item() == pytest.approx(-0.2)
    cell.reset()
    assert cell.v is None


def test_rate_converges_to_input():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5000, generator=gen) * 3
    cell = MTNeuron(torch.tensor(0.2), torch.tensor(0.3), levels=8)
    total = torch.zeros_like(a)
    for t in range(1, 65):
        total += cell(a)
        # S(t) = t·a - v(t) exactly: the rate error is -v(t)/t
        assert torch.allclose(total / t - a, -cell.v / t, atol=1e-5)
    assert (total / 64 - a).abs().max() < 0.3 * 2**7 / 64


def test_spike_planes_rebuild_output():
    gen = torch.Generator().manual_seed(1)
    m = torch.randn(3, 100, generator=gen, dtype=torch.float64) * 10
    theta_pos, theta_neg = torch.tensor(0.25, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    for x in (mt_fire(m, theta_pos, theta_neg, 5), burst_fire(m, theta_pos, theta_neg, 5)):
        planes = spike_planes(x, theta_pos, theta_neg, 5)
        assert planes.shape == (10, 3, 100)
        assert set(planes.unique().tolist()) <= {0.0, 1.0}
        lam = level_values(theta_pos, theta_neg, 5).view(-1, 1, 1)
        assert torch.allclose((planes * lam).sum(0), x)
    single = spike_planes(mt_fire(m, theta_pos, theta_neg, 5), theta_pos, theta_neg, 5)
    assert single.sum(0).max() <= 1  # an MT neuron fires at most one spike per step
    finer = mt_fire(m, theta_pos, theta_neg, 13, "nearest", 3)  # levels θ·2^(k/3)
    planes = spike_planes(finer, theta_pos, theta_neg, 13, 3)
    assert planes.shape == (26, 3, 100) and planes.sum(0).max() == 1 and planes[:, finer == 0].sum() == 0
    assert torch.allclose((planes * level_values(theta_pos, theta_neg, 13, 3).view(-1, 1, 1)).sum(0), finer)


def test_per_channel_thresholds_broadcast():
    theta = torch.tensor([1.0, 2.0, 4.0])
    x = mt_fire(torch.full((2, 3), 2.0), theta, theta, 4)
    assert x.tolist() == [[2.0, 2.0, 4.0]] * 2


def test_invalid_neuron_arguments():
    with pytest.raises(ValueError, match="theta"):
        MTNeuron(torch.tensor(0.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match="rounding"):
        MTNeuron(torch.tensor(1.0), torch.tensor(1.0), rounding="up")
    with pytest.raises(ValueError, match="neuron"):
        MTNeuron(torch.tensor(1.0), torch.tensor(1.0), neuron="lif")
    with pytest.raises(ValueError, match="per_octave must be an integer >= 1"):
        MTNeuron(torch.tensor(1.0), torch.tensor(1.0), per_octave=0)
    with pytest.raises(ValueError, match=r"burst.*per_octave must be 1"):
        MTNeuron(torch.tensor(1.0), torch.tensor(1.0), neuron="burst", per_octave=2)


def test_rate_driven_neuron_by_hand():
    # increments 0.7, 0.2, 1.4 have rates 0.7, 0.45, 2.3/3: m(t) = t·r(t) - X(t-1) is v(t-1) + I(t),
    # 0.7, -0.1, 1.3, so both fire 1, 0, 1 (θ1 = 1, θ2 = 0.5); the rate-driven one keeps no membrane
    plain, driven = MTNeuron(T1, T2, 3), MTNeuron(T1, T2, 3)
    driven.takes_rate = True
    increments, rates = [0.7, 0.2, 1.4], [0.7, 0.45, 2.3 / 3]
    assert [plain(torch.tensor(i)).item() for i in increments] == [1.0, 0.0, 1.0]
    assert [driven(torch.tensor(r)).item() for r in rates] == [1.0, 0.0, 1.0]
    assert driven.v is None and driven.total.item() == 2.0
    assert plain.total is None and plain.v.item() == pytest.approx(0.3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("takes_rate", [False, True])
@pytest.mark.parametrize(("neuron", "rounding"), [("mt", "greedy"), ("mt", "nearest"), ("burst", "greedy")])
def test_fused_step_equals_unfused_on_level_boundaries(neuron, rounding, takes_rate, device):
    # m/θ exactly on the boundaries 2^k - 1/2 (and a hair either side), with θ = 0.9375: 4.6875/0.9375
    # is where an approximate division (Triton's default) returns 5 + 1 ulp
    theta = torch.tensor(0.9375)
    ratios = torch.tensor([0.5, 1.5, 3.5, 4.6875 / 0.9375, 7.5, 15.5, 100.0]).repeat_interleave(3)
    ratios = ratios + torch.tensor([-1e-6, 0.0, 1e-6]).repeat(7)
    current = (torch.cat([ratios, -ratios]) * theta).view(2, 1, -1).expand(2, 3, -1).to(device)
    plain, fused = (MTNeuron(theta, theta / 2, 4, rounding, neuron).to(device) for _ in range(2))
    fused.fused = True
    for cell in (plain, fused):  # driven by rates: m = t·r - X, a product that must not be fused
        cell.takes_rate = cell.keeps_total = takes_rate
    for _ in range(3):  # the membrane (or the spike sum) carries the remainders between steps
        assert torch.equal(fused(current), plain(current))
        assert torch.equal(fused.total, plain.total) if takes_rate else torch.equal(fused.v, plain.v)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rounding", ["greedy", "nearest"])
def test_fused_step_with_levels_per_octave_equals_unfused(rounding, device):
    # compiled, the logarithm and the power of two are vectorized library calls: the same levels
    current = torch.randn(4, 16, 50, generator=torch.Generator().manual_seed(3)).to(device) * 5
    plain, fused = (MTNeuron(T1 * 0.37, T2 * 0.4, 29, rounding, "mt", 4).to(device) for _ in range(2))
    fused.fused = True
    for _ in range(3):
        assert torch.equal(fused(current), plain(current))
        assert torch.equal(fused.v, plain.v)


def test_fused_neuron_whose_spikes_nobody_reads_writes_only_its_sum():
    # a product EC or a layer that hands on rates reads the sum X only; a spike monitor's hook
    # still sees the spikes
    current = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(7)) * 3
    plain, quiet = MTNeuron(T1, T2, 4), MTNeuron(T1, T2, 4)
    for cell in (plain, quiet):
        cell.takes_rate = True
    quiet.fused, quiet.spikes_read = True, False
    for _ in range(3):
        spikes = plain(current)
        assert quiet(current) is None
        assert torch.equal(quiet.total, plain.total)
    seen = []
    quiet.register_forward_hook(lambda module, inputs, x: seen.append(x))
    assert torch.equal(quiet(current), plain(current)) and seen and spikes is not None


@pytest.mark.parametrize("takes_rate", [False, True])
def test_two_quiet_fused_neurons_step_in_one_call(takes_rate):
    # a product's operands: one compiled call for both (the same sums as each on its own,
    # every batch size on one compilation); a hook on either makes them step one by one again
    gen = torch.Generator().manual_seed(8)
    theta = [(T1, T2), (T2 * 0.7, T1 * 1.3)]
    quiet, plain = [[MTNeuron(*theta[i], 4) for i in range(2)] for _ in range(2)]
    for neuron in quiet + plain:
        neuron.takes_rate, neuron.keeps_total, neuron.spikes_read = takes_rate, True, False
    for neuron in quiet:
        neuron.fused = True
    compiled = torch._dynamo.utils.counters["stats"]
    for batch in (4, 3):
        a, b = torch.randn(batch, 3, 8, generator=gen) * 3, torch.randn(batch, 8, 3, generator=gen).mT * 2
        for neuron in quiet + plain:
            neuron.reset()
        for _ in range(3):
            assert fire_both(quiet[0], a, quiet[1], b) == (None, None)
            plain[0](a), plain[1](b)
            assert all(torch.equal(q.total, p.total) for q, p in zip(quiet, plain, strict=True))
        if batch == 4:
            graphs = compiled["unique_graphs"]
    assert compiled["unique_graphs"] == graphs and quiet[0].t == 3
    seen = []
    quiet[1].register_forward_hook(lambda module, inputs, x: seen.append(x))
    spikes = fire_both(quiet[0], a, quiet[1], b)
    assert spikes[0] is None and torch.equal(spikes[1], plain[1](b)) and len(seen) == 1
    plain[0](a)
    assert all(torch.equal(q.total, p.total) for q, p in zip(quiet, plain, strict=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_power_of_two_floor_compiled_equals_eager(dtype):
    # compiled for the CPU it takes another route (integer bit smearing instead of a mantissa mask)
    powers = 2.0 ** torch.arange(31, dtype=torch.float64)
    y = torch.cat([torch.arange(4097.0, dtype=torch.float64), powers, powers - 1, powers + 1])
    y = y.clamp(max=2.0**30).to(dtype)
    expected = torch.where(y >= 1, 2.0 ** torch.floor(torch.log2(y.double())), 0.0).to(dtype)
    assert torch.equal(_pow2_floor_(y.clone()), expected)
    assert torch.equal(fused(_pow2_floor_, y.clone()), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_signed_threshold_compiled_equals_eager(device, dtype):
    # compiled it is a select, eagerly s·(θ1+θ2)/2 + (θ1-θ2)/2: in float32 the formula gives
    # neither θ1 nor -θ2 back exactly for these thresholds, and the select must pick the same
    # rounded values (in float64, thresholds stored in float32 come back exactly)
    theta_pos, theta_neg = torch.tensor(0.3038884401321411), torch.tensor(0.7923478484153748)
    half_sum, half_difference = (theta_pos + theta_neg) / 2, (theta_pos - theta_neg) / 2
    assert half_sum + half_difference != theta_pos and half_sum - half_difference != theta_neg
    m = torch.tensor([-3.0, -1e-30, 0.0, 1e-30, 2.5], device=device, dtype=dtype)
    for thresholds in ((theta_pos, theta_neg), (theta_pos.repeat(5), theta_neg.repeat(5))):
        thresholds = [theta.to(device, dtype) for theta in thresholds]
        expected = _signed_threshold(m, *thresholds, None)
        assert torch.equal(fused(_signed_threshold, m, *thresholds, None), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fuse", [False, True])
def test_membrane_layout_follows_a_transposed_input(device, fuse):
    # kᵀ in attention is a transposed view of a slice of qkv's output: the membrane is the
    # transpose of a contiguous tensor, so that one step walks both along the same dimension and
    # the product reads it as a batch of transposed matrices without a copy; an input whose last
    # dimension is contiguous gets a contiguous membrane
    qkv = torch.randn(2, 7, 3, 3, 5, device=device) * 4
    current = qkv.permute(2, 0, 3, 1, 4)[1].transpose(-2, -1)  # [2, 3, 5, 7], unit stride at -2
    plain, neuron = (MTNeuron(torch.tensor(0.5), torch.tensor(0.25), 4).to(device) for _ in range(2))
    neuron.fused = fuse
    for _ in range(3):
        assert torch.equal(neuron(current), plain(current.contiguous()))
    assert neuron.v.transpose(-2, -1).is_contiguous()
    assert neuron.v.reshape(6, 5, 7).data_ptr() == neuron.v.data_ptr()  # a view: no copy
    sliced = MTNeuron(torch.tensor(0.5), torch.tensor(0.25), 4).to(device)
    sliced(torch.randn(2, 3, 7, 10, device=device)[..., :5])
    assert sliced.v.is_contiguous()


def test_fused_step_compiles_once_for_every_batch_size():
    # on the CPU every size but the batch is fixed in the kernel: a smaller last batch reuses it
    neuron = MTNeuron(torch.tensor(0.5), torch.tensor(0.25), 5)
    neuron.fused = True
    compiled = torch._dynamo.utils.counters["stats"]
    for batch in (4, 3, 6):
        current = torch.randn(batch, 6, 11) * 3
        plain = MTNeuron(torch.tensor(0.5), torch.tensor(0.25), 5)
        neuron.reset()
        for _ in range(2):
            assert torch.equal(neuron(current), plain(current))
        if batch == 4:
            graphs = compiled["unique_graphs"]
    assert compiled["unique_graphs"] == graphs


def test_fused_step_without_compiler_says_so():
    # a number of levels no other test compiles: Inductor caches kernels by their source, so a
    # kernel compiled before (same size and constants, whatever the rank) would stand in for the
    # missing compiler
    shape = (1, 1, 1, 1, 1, 3)
    args = (torch.ones(shape), torch.zeros(shape), None, None, torch.tensor(1.0), torch.tensor(1.0), 13)
    # compile_threads=1: in this process, not in a worker pool that an earlier compilation
    # started (with more cores) and that never sees the patched compiler
    broken = torch._inductor.config.patch({"cpp.cxx": ("/bin/false",), "compile_threads": 1})
    with broken, pytest.raises(FusionError, match=r"fused neurons: .*fuse\(False\)"):
        fused(charge_fire_reset, *args)


def test_fused_step_on_a_torch_without_ieee_division_says_so(monkeypatch):
    import torch._inductor.config  # loads the module replaced below

    monkeypatch.setattr(torch._inductor, "config", types.SimpleNamespace())  # no eager_numerics
    monkeypatch.setattr(fusion, "_compiled", functools.cache(fusion._compiled.__wrapped__))
    with pytest.raises(FusionError, match=r"torch >= 2.11 can\); run unfused"):
        fused(
            charge_fire_reset,
            torch.ones(3),
            torch.zeros(3),
            None,
            None,
            torch.tensor(1.0),
            torch.tensor(1.0),
            2,
        )
