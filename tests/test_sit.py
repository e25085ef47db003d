"""SIT-conversion: SI-exp, SI-norm, the spiking softmax, method="sit" and block-by-block conversion."""

import json
from functools import partial
from importlib import resources

import numpy as np
import pytest
import torch
from conftest import DEVICES, ann_output, assert_converges, relative_error, tiny_vit

import transpike
from transpike.sit import (
    MODES,
    SpikingSoftmax,
    _SurrogateSpike,
    default_norm_spikes,
    fitted_parameters,
    fs_neuron,
    fs_spikes,
    si_exp,
    si_norm,
    spiking_softmax,
)
from transpike.sit import fit as fitting
from transpike.sit.fit import (
    FIT_POINTS,
    LONGER_STEPS,
    _initial,
    _rmse,
    cascades,
    evolve,
    exact_rmse,
    fit_si_exp,
    insertions,
    with_silent_steps,
)


def test_fs_neuron_by_hand():
    # T = (0, 0.5), h = (1, 0), d = (1, 2); x = 0.7: fires at t=1 (v -> -0.3), not at t=2 -> 1
    T, h, d = torch.tensor([0.0, 0.5]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 2.0])
    x = torch.tensor([-0.1, 0.7, 1.6])
    assert fs_neuron(x, T, h, d).tolist() == [0.0, 1.0, 3.0]
    assert fs_spikes(x, T, h).tolist() == [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]


def test_fs_neuron_inference_path_equals_autograd_path():
    # without autograd the membrane and the output are updated in place: same bits, x untouched
    fit = shipped()["paper"][8]
    T, h, d = (torch.tensor(fit[n], dtype=torch.float64) for n in ("T", "h", "d"))
    x = torch.linspace(-1.5, 1.5, 3001, dtype=torch.float64)
    original = x.clone()
    tracked = fs_neuron(x, T.clone().requires_grad_(), h.clone().requires_grad_(), d)
    with torch.inference_mode():
        assert torch.equal(fs_neuron(x, T, h, d), tracked)
    assert torch.equal(x, original)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fs_neuron_is_a_staircase_with_one_jump_size_per_step(seed):
    # The facts behind BENCHMARKS §5's bounds, for any T, h (either sign) and d: as x grows, the
    # spike pattern only changes by its first changing step t going 0 -> 1 (lexicographic order,
    # so at most 2^K pieces), and the output then jumps by d(t) + G(T(t) - h(t)) - G(T(t)⁻), where
    # G is the neuron made of steps t+1..K: the same jump wherever step t changes first. With
    # t = 1: the output is G(x) below T(1) and d(1) + G(x - h(1)) from it on.
    gen = torch.Generator().manual_seed(seed)
    steps = 6
    noise = lambda: 1 + 0.2 * torch.randn(steps, generator=gen, dtype=torch.float64)  # noqa: E731
    # successive approximation of x in [-4, 4], perturbed, with one reset negative; d random
    scale = 8 * 2.0 ** -torch.arange(1, steps + 1, dtype=torch.float64)
    T, h = -4 + scale * noise(), scale * noise() * torch.tensor([1, 1, -1, 1, 1, 1])
    d = torch.randn(steps, generator=gen, dtype=torch.float64)
    x = torch.linspace(-4, 4, 1_000_001, dtype=torch.float64)
    spikes = fs_spikes(x, T, h)
    changed = (spikes[1:] != spikes[:-1]).any(-1).nonzero().squeeze(-1)
    assert 2 * steps < changed.numel() < 2**steps
    first = (spikes[changed + 1] != spikes[changed]).int().argmax(-1)
    assert (spikes[changed, first] == 0).all() and (spikes[changed + 1, first] == 1).all()
    jump = fs_neuron(x, T, h, d).diff()[changed]

    def suffix(t: int, v: float) -> float:  # G: the output of steps t+1..K from v(t+1) = v
        return fs_neuron(torch.tensor([v], dtype=torch.float64), T[t + 1 :], h[t + 1 :], d[t + 1 :]).item()

    below = torch.finfo(torch.float64).eps * 8
    expected = torch.tensor([d[t] + suffix(t, T[t] - h[t]) - suffix(t, T[t] - below) for t in range(steps)])
    assert torch.allclose(jump, expected[first], atol=1e-12)
    rest = lambda v: fs_neuron(v, T[1:], h[1:], d[1:])  # noqa: E731
    split = torch.where(x >= T[0], d[0] + rest(x - h[0]), rest(x))
    assert torch.allclose(fs_neuron(x, T, h, d), split, atol=1e-12)  # the same sum in another order


def test_surrogate_gradient():
    v = torch.tensor([0.2, 1.0, 3.0], requires_grad=True)
    threshold = torch.tensor(1.0, requires_grad=True)
    _SurrogateSpike.apply(v, threshold).sum().backward()
    expected = torch.clamp(
        1 - (torch.tensor([0.2, 1.0, 3.0]) - 1).abs() / (torch.tensor([0.2, 1.0, 3.0]) + 1), min=0
    )
    assert torch.allclose(v.grad, expected)
    assert threshold.grad.item() == pytest.approx(-expected.sum().item())


def test_si_norm_equals_simulated_if_neuron():
    weight = torch.tensor([0.3, 1.7, 2.2, 0.0, 0.01])
    v_th = weight.sum()
    steps = 40
    v, spikes = v_th / 2 * torch.ones(5), torch.zeros(5)  # half charged at the start
    for _ in range(steps):  # charge w per step, fire and subtract V_th at threshold
        v += weight
        z = (v >= v_th).float()
        v -= v_th * z
        spikes += z
    assert torch.equal(si_norm(weight, v_th, steps), spikes / steps)
    # the count is N·w/V_th rounded: within 1/(2N) of the exact quotient, where a floor is 1/N off
    assert torch.all((si_norm(weight, v_th, steps) - weight / v_th).abs() <= 0.5 / steps)
    assert spikes.tolist() == [3, 16, 21, 0, 0]


def shipped():
    return json.loads(resources.files("transpike").joinpath("data/si_exp.json").read_text())


@pytest.mark.parametrize("key", ["paper", "shifted"])
def test_shipped_parameters_reproduce_their_error(key):
    for fit in shipped()[key]:
        lo, hi = fit["range"]
        x = torch.linspace(lo, hi, FIT_POINTS, dtype=torch.float64)
        T, h, d = (torch.tensor(fit[n], dtype=torch.float64) for n in ("T", "h", "d"))
        assert (fs_neuron(x, T, h, d) - x.exp()).square().mean().sqrt().item() == pytest.approx(
            fit["rmse"], rel=1e-6
        )
    assert [f["K"] for f in shipped()[key]] == [*range(4, 17), *LONGER_STEPS]
    errors = [f["rmse"] for f in shipped()[key]]
    assert errors == sorted(errors, reverse=True)  # each warm-started from the one before


def test_fit_is_seeded():
    first = fit_si_exp(4, -1.0, 1.0, seed=3, restarts=2, iterations=30)
    assert fit_si_exp(4, -1.0, 1.0, seed=3, restarts=2, iterations=30) == first
    assert first["rmse"] < 0.2


@pytest.mark.parametrize("steps", [4, 5])
def test_global_search_is_seeded_and_only_adds_a_candidate(steps):
    # K = 5 is warm-started from the shipped K = 4 fit, which also seeds a second search
    previous = fitted_parameters(4, shifted=False) if steps == 5 else None
    args = dict(seed=3, restarts=1, iterations=30, previous=previous)
    local = fit_si_exp(steps, -1.0, 1.0, **args)
    both = fit_si_exp(steps, -1.0, 1.0, **args, generations=4, population=4)
    assert fit_si_exp(steps, -1.0, 1.0, **args, generations=4, population=4) == both
    assert both["rmse"] <= local["rmse"]
    x = torch.linspace(-1.0, 1.0, FIT_POINTS, dtype=torch.float64)
    params = np.array(both["T"] + both["h"])
    assert exact_rmse(params, x, x.exp(), (x.exp() @ x.exp()).item()) == pytest.approx(both["rmse"], rel=1e-6)


def test_global_search_from_a_start_never_ends_worse_than_it():
    x = torch.linspace(-1.0, 1.0, FIT_POINTS, dtype=torch.float64)
    y = x.exp()
    previous = fitted_parameters(4, shifted=False)
    # the 4-step fit and a 5th step that never fires (T above the range: clipped into the box)
    start = torch.cat(with_silent_steps(previous, 1.0, 5))
    found = evolve(x, y, 5, seed=0, generations=2, population=3, start=start)
    assert torch.equal(found, evolve(x, y, 5, seed=0, generations=2, population=3, start=start))
    loss = lambda p: exact_rmse(p.numpy(), x, y, (y @ y).item())  # noqa: E731
    assert loss(found) <= loss(start) == pytest.approx(previous["rmse"], rel=1e-6)


def test_insertions_keep_the_shorter_fit_and_can_beat_it():
    x = torch.linspace(-1.0, 1.0, FIT_POINTS, dtype=torch.float64)
    previous = fitted_parameters(4, shifted=False)
    found = insertions(x, x.exp(), previous, keep=2)
    assert [t.shape for pair in found for t in pair] == [torch.Size([5])] * 4
    errors = [_rmse(x, x.exp(), *pair)[0] for pair in found]
    # the grid holds a silent step, so the best is at worst the 4-step fit; here it is better
    assert errors[0] <= errors[1] and errors[0] < previous["rmse"]
    again = insertions(x, x.exp(), previous, keep=1)[0]
    assert torch.equal(found[0][0], again[0]) and torch.equal(found[0][1], again[1])


def test_a_longer_fit_starts_from_a_shorter_one(monkeypatch):
    previous = fitted_parameters(4, shifted=False)
    # the one-step insertion grid only applies to a fit for K - 1 steps
    monkeypatch.setattr(fitting, "insertions", lambda *args: pytest.fail("insertions for K = 7 from K = 4"))
    found = fit_si_exp(7, -1.0, 1.0, seed=0, restarts=1, iterations=20, previous=previous)
    assert len(found["T"]) == len(found["h"]) == len(found["d"]) == 7
    assert found["rmse"] <= previous["rmse"]  # the 4-step fit with three silent steps is a start
    threshold, reset = with_silent_steps(previous, 1.0, 7)
    x = torch.linspace(-1.0, 1.0, FIT_POINTS, dtype=torch.float64)
    assert _rmse(x, x.exp(), threshold, reset)[0] == pytest.approx(previous["rmse"], rel=1e-6)


def test_a_part_of_the_table_is_fitted_as_in_the_whole(monkeypatch):
    calls = []

    def fit(steps, lo, hi, seed, restarts, previous, generations, cascade_draws):
        calls.append(dict(previous=previous, generations=generations))
        return {"K": steps, "rmse": 0.0}

    monkeypatch.setattr(fitting, "fit_si_exp", fit)
    threads = torch.get_num_threads()
    try:
        fits = fitting._fit_range("shifted", 5, 6, [9], seed=0, restarts=1, generations=150, cascade_draws=10)
    finally:
        torch.set_num_threads(threads)
    assert [f["K"] for f in fits] == [5, 6, 9]
    # the first K starts from the shipped K - 1, as in the run that made the table; each later one
    # from the fit before it; the global search stops at the last K of --steps
    assert [c["previous"] for c in calls] == [fitted_parameters(4, shifted=True), fits[0], fits[1]]
    assert [c["generations"] for c in calls] == [150, 150, 0]


def test_fit_command_writes_both_ranges(tmp_path):
    out = tmp_path / "fits.json"
    cheap = ["--generations", "0", "--cascade-draws", "0", "--restarts", "1"]
    fitting.main(["fit", "--steps", "4", "4", "--longer", "6", *cheap, "--out", str(out)])
    table = json.loads(out.read_text())
    for key, (lo, hi) in (("paper", (-1.0, 1.0)), ("shifted", (-12.0, 0.0))):
        assert [(f["K"], f["range"]) for f in table[key]] == [(4, [lo, hi]), (6, [lo, hi])]
        assert table[key][1]["rmse"] <= table[key][0]["rmse"]


@pytest.mark.parametrize(
    "steps, longer",
    [
        (["5", "4"], "[]"),  # a run that does not end at K = 16 fits no longer neurons by default
        (["17", "16"], "[20, 24, 28, 32]"),  # one that does, the shipped ones
        (["4", "6", "--longer", "8", "8"], "[8, 8]"),
        (["0", "4"], "[]"),
    ],
)
def test_fit_command_rejects_steps_out_of_order(steps, longer, capsys):
    with pytest.raises(SystemExit):
        fitting.main(["fit", "--steps", *steps])
    assert f"--longer {longer}: K must be >= 1 and increasing" in capsys.readouterr().err


def test_cascades_are_seeded_sorted_and_descending():
    x = torch.linspace(-12.0, 0.0, FIT_POINTS, dtype=torch.float64)
    y = x.exp()
    found = cascades(x, y, 6, seed=0, draws=200, keep=3)
    again = cascades(x, y, 6, seed=0, draws=200, keep=3)
    assert len(found) == len(again) == 3
    assert all(torch.equal(torch.cat(a), torch.cat(b)) for a, b in zip(found, again, strict=True))
    errors = [_rmse(x, y, *pair)[0] for pair in found]
    assert errors == sorted(errors)
    threshold, reset = found[0]
    # the shape: resets > 0, thresholds falling overall from near the top of the range
    assert (reset > 0).all() and threshold[0] > threshold[-1] and threshold[0] > -12.0 + 0.4 * 12.0
    # the best draw alone, before any refinement, beats the successive-approximation start
    assert errors[0] < _rmse(x, y, *_initial(6, -12.0, 0.0))[0]


def test_si_exp_approximates_exp():
    x = torch.linspace(-1, 1, 1001, dtype=torch.float64)
    assert (si_exp(x, K=12) - x.exp()).abs().max() < 0.1
    shifted = torch.linspace(-12, 0, 1001, dtype=torch.float64)
    assert (si_exp(shifted, K=12, fit="shifted") - shifted.exp()).abs().max() < 0.1


def test_spiking_softmax_is_a_softmax():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 16, generator=gen) * 4  # far outside the paper's [-1, 1]
    y = spiking_softmax(x, dim=-1, K=12)
    assert y.shape == x.shape and (y >= 0).all()
    assert torch.allclose(y.sum(-1), torch.ones(50), atol=1e-3)
    error = (y - x.softmax(-1)).abs()
    assert error.max() < 0.1 and error.mean() < 0.01
    assert torch.equal(spiking_softmax(x + 100.0), y)  # shift-invariant like softmax


@pytest.mark.parametrize("dim", [-1, 1])
def test_default_norm_spikes_follow_the_row_length(dim):
    """By default SI-norm's N is 256 × the row length rounded to a power of two: short rows get a
    shorter train, rows of 197 (a ViT at 224 px) the 2^16 they need."""
    rows = (1, 5, 17, 65, 197, 577)
    assert [default_norm_spikes(row) for row in rows] == [2**8, 2**10, 2**12, 2**14, 2**16, 2**17]
    gen = torch.Generator().manual_seed(0)
    for row in (5, 17, 197):
        n = default_norm_spikes(row)
        x = torch.randn(3, row, row, generator=gen)
        y = SpikingSoftmax(dim)(x)
        assert SpikingSoftmax(dim).spikes_for(row) == n
        assert torch.equal(y, SpikingSoftmax(dim, norm_spikes=n)(x))
        spikes = y * n  # whole spike counts (exact: N is a power of two), N per row within ½ per entry
        assert torch.equal(spikes, spikes.round())
        assert (spikes.sum(dim) - n).abs().max() <= row / 2
    assert SpikingSoftmax(norm_spikes=64).spikes_for(197) == 64


def test_softmax_modes():
    x = torch.rand(8, 10) * 2 - 1
    for mode in ("shift", "clip"):
        assert (SpikingSoftmax(-1, 12, mode)(x) - x.softmax(-1)).abs().max() < 0.05
    assert (SpikingSoftmax(-1, 12, "sigmoid")(x) - torch.sigmoid(x).softmax(-1)).abs().max() < 0.05
    with pytest.raises(ValueError, match="sit mode"):
        SpikingSoftmax(mode="exp")
    with pytest.raises(ValueError, match="K=99"):
        SpikingSoftmax(steps=99)


def test_sit_conversion(images):
    calibration, x = images
    model = tiny_vit()
    ref = ann_output(model, x)
    snn = transpike.convert(model, calibration, method="sit", sit_steps=12)
    softmaxes = [r for r in snn.report().rows if r.module_type == "SpikingSoftmax"]
    assert [r.path for r in softmaxes] == ["blocks.0.attn.softmax", "blocks.1.attn.softmax"]
    assert all(r.role == "ec" for r in softmaxes)
    assert softmaxes[0].detail == "dim=-1, steps=12, mode=shift, norm_spikes=auto"
    y = snn.simulate(x, 64)
    assert_converges(y, ref)


def test_zero_blocks_is_the_ann_at_every_step(images):
    calibration, x = images
    model = tiny_vit()
    ref = ann_output(model, x)
    snn = transpike.convert(model, calibration, blocks=0)
    # fc_norm (an Identity here) and head_drop are linear and stateless: kept as they are
    assert {r.path for r in snn.report().analog} == {"blocks.0", "blocks.1", "norm", "head"}
    assert torch.allclose(snn.simulate(x, 3), ref.expand(3, *ref.shape), atol=1e-5)


def test_analog_eva_blocks_get_their_rotary_tables(images):
    """An EVA block left analog is called with keyword arguments (rope, attn_mask, is_causal),
    which the analog wrapper hands on: the rest of the model is still the ANN's on rates."""
    calibration, x = images
    model = tiny_vit("eva02_tiny_patch14_224", head_init_scale=1.0)
    ref = ann_output(model, x)
    assert torch.allclose(transpike.convert(model, calibration, blocks=0).simulate(x, 2)[-1], ref, atol=1e-5)
    assert_converges(transpike.convert(model, calibration, blocks=1).simulate(x, 64), ref)


def test_blocks_convert_a_prefix(images):
    calibration, x = images
    model = tiny_vit()
    ref = ann_output(model, x)
    one = transpike.convert(model, calibration, blocks=1)
    assert {r.path for r in one.report().analog} == {"blocks.1", "norm", "head"}
    assert [r.path for r in one.report().by_role("mt×mt+product-ec")] == [
        "blocks.0.attn.qk",
        "blocks.0.attn.av",
    ]
    full = transpike.convert(model, calibration, blocks=2)
    assert torch.equal(full.simulate(x, 4), transpike.convert(model, calibration).simulate(x, 4))
    assert relative_error(one.simulate(x, 8)[-1], ref) > 0
    # the analog rest is the ANN's tail applied to the rate of its input at every t, which the
    # residual stream hands it (transpike.rates; test_rates.py checks it against increments)
    assert one.network.blocks[1].takes_rate
    inputs = []
    one.network.blocks[1].register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))
    y = one.simulate(x, 8)
    rates = torch.stack(inputs)
    with torch.no_grad():
        tail = [model.forward_head(model.norm(model.blocks[1](rate))) for rate in rates]
    assert torch.allclose(y, torch.stack(tail), atol=1e-5)
    with pytest.raises(ValueError, match="only 2 blocks"):
        transpike.convert(model, calibration, blocks=3)
    with pytest.raises(ValueError, match="blocks"):
        transpike.convert(torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.randn(4, 2), blocks=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_fused_spiking_softmax_equals_unfused(mode, device):
    gen = torch.Generator().manual_seed(0)
    plain, fused = (SpikingSoftmax(-1, 12, mode).to(device) for _ in range(2))
    fused.fused = True
    # random rows, and rows whose entries sit exactly on SI-exp's thresholds (v = T fires)
    on_thresholds = plain.T.cpu().repeat(2, 1) + torch.tensor([[0.0], [-1e-6]])
    seen = {}
    for x in (4 * torch.randn(2, 3, 9, 7, generator=gen), on_thresholds):
        x = x.to(device)
        assert torch.equal(fused(x), plain(x))
        for module in (plain, fused):  # observed, as by a spike monitor: also SI-exp's spikes per entry
            module.observe = partial(seen.__setitem__, module)
        assert torch.equal(fused(x), plain(x))
        expected = fs_spikes(plain.exp_input(x), plain.T, plain.h).sum(-1)
        assert torch.equal(seen[fused], expected) and torch.equal(seen[plain], expected)
        plain.observe = fused.observe = None
