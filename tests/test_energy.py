"""Energy and spike accounting: counts against closed forms, brute force and hand values."""

import json

import pytest
import torch
from conftest import DEVICES, tiny_vit
from timm.layers import Attention
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import transpike
from transpike import MTNeuron, burst_fire, mt_fire, spike_planes
from transpike.energy import ARITHMETIC, E_AC, E_FLOAT, E_MAC, EnergyReport, count_dense_work
from transpike.sit import SpikingSoftmax, fs_spikes
from transpike.spikes import SpikeMonitor, SpikeStatistics, _burst_codes, operand_nonzeros, product_operations


def vit_macs(depth=2, dim=24, tokens=17, patches=16, patch=4, channels=3, mlp_ratio=4, classes=5):
    """Closed-form multiply-accumulates of one ViT forward (class token, linear pooling)."""
    block = tokens * dim * (3 * dim + dim + 2 * mlp_ratio * dim) + 2 * tokens * tokens * dim
    return patches * channels * patch * patch * dim + depth * block + dim * classes


def test_ann_macs_match_closed_form_and_flop_counter(images):
    calibration, x = images
    model = tiny_vit()
    report = transpike.account(transpike.convert(model, calibration), x, 3)
    assert report.ann_macs == vit_macs()
    for module in model.modules():  # timm's fused kernel is not in the flop counter's registry
        if isinstance(module, Attention):
            module.fused_attn = False
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert counter.get_total_flops() / 2 / len(x) == vit_macs()
    qkv = next(layer for layer in report.layers if layer["path"] == "blocks.0.attn.qkv")
    assert qkv["ann_macs"] == 17 * 24 * 72


def test_weight_layer_acs_are_spikes_times_fan_out():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.GELU(), nn.Linear(10, 3)).eval()
    snn = transpike.convert(model, torch.randn(64, 6))
    x = torch.randn(5, 6)
    spikes = []
    hooks = [m.register_forward_hook(lambda m, i, o: spikes.append(o.clone())) for m in snn.network.modules()
             if isinstance(m, MTNeuron)]  # fmt: skip
    report = transpike.account(snn, x, 4)
    for hook in hooks:
        hook.remove()
    spikes = spikes[-8:]  # the accounted run: (fc1 input, fc2 input) per step
    for t in range(4):
        expected = (spikes[2 * t].count_nonzero() * 10 + spikes[2 * t + 1].count_nonzero() * 3) / 5
        assert report.acs[t] == pytest.approx(expected.item())
    cumulative = torch.tensor(report.acs).cumsum(0)
    assert report.ratio["ecmt"] == pytest.approx((E_AC * cumulative / (E_MAC * (6 * 10 + 10 * 3))).tolist())


def test_product_operations_match_brute_force():
    gen = torch.Generator().manual_seed(2)

    def sparse(*shape):
        return torch.randn(*shape, generator=gen) * (torch.rand(*shape, generator=gen) < 0.3)

    a, b, sum_a, sum_b = sparse(2, 4, 5), sparse(2, 5, 3), sparse(2, 4, 5), sparse(2, 5, 3)

    def triples(u, v):  # #(i, j, k) with u_ij != 0 and v_jk != 0
        return torch.einsum("bij,bjk->", (u != 0).double(), (v != 0).double())

    expected = triples(a, b) + triples(a, sum_b) + triples(sum_a, b) + 3 * 2 * 4 * 3
    assert product_operations(a, b, *operand_nonzeros(sum_a, sum_b, "matmul"), "matmul") == expected
    c, d = sparse(3, 4), sparse(3, 4)
    pairs = ((c != 0) & (d != 0)).sum() + ((c != 0) & (sum_a[0, :3, :4] != 0)).sum()
    pairs += ((sum_a[1, :3, :4] != 0) & (d != 0)).sum()
    nnz = operand_nonzeros(sum_a[1, :3, :4], sum_a[0, :3, :4], "mul")
    assert product_operations(c, d, *nnz, "mul") == pairs + 3 * 12
    # a broadcast operand (squeeze-and-excitation's scale): one update per element of the output
    e, sum_e = sparse(3, 1), sparse(3, 1)
    pairs = ((c != 0) & (e != 0)).sum() + ((c != 0) & (sum_e != 0)).sum()
    pairs += ((sum_a[1, :3, :4] != 0) & (e != 0)).sum()
    nnz = operand_nonzeros(sum_a[1, :3, :4], sum_e, "mul")
    assert product_operations(c, e, *nnz, "mul") == pairs + 3 * 12
    assert product_operations(e, c, *reversed(nnz), "mul") == pairs + 3 * 12
    # a matrix broadcast over the other's leading dims (one key for all heads, BAT's P for all the
    # channels of its group): as many triples, and one update per output, as with it repeated
    f, sum_f = sparse(3, 1, 4, 5), sparse(3, 1, 4, 5)
    g, sum_g = sparse(3, 2, 5, 6), sparse(3, 2, 5, 6)
    repeated = product_operations(
        f.expand(3, 2, 4, 5), g, *operand_nonzeros(sum_f.expand(3, 2, 4, 5), sum_g, "matmul"), "matmul"
    )
    assert product_operations(f, g, *operand_nonzeros(sum_f, sum_g, "matmul"), "matmul") == repeated
    assert (
        repeated
        == triples(f.expand(3, 2, 4, 5).flatten(0, 1), g.flatten(0, 1))
        + triples(f.expand(3, 2, 4, 5).flatten(0, 1), sum_g.flatten(0, 1))
        + triples(sum_f.expand(3, 2, 4, 5).flatten(0, 1), g.flatten(0, 1))
        + 3 * 6 * 4 * 6
    )


@pytest.mark.parametrize("neuron", ["mt", "burst"])
@pytest.mark.parametrize("shape", [(), (7,), (64,)])  # 64 channels: some share their exponents
# 8: burst counts read from the output's top bits; 16: counts up to 2^16 - 1, from a division
@pytest.mark.parametrize("levels, scale", [(5, 5.0), (8, 300.0), (16, 3000.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_level_histogram_counts_every_spike(neuron, shape, levels, scale, dtype):
    gen = torch.Generator().manual_seed(3)
    theta_pos, theta_neg = torch.rand(shape, generator=gen) + 0.05, torch.rand(shape, generator=gen) + 0.05
    m = torch.randn(30, *(shape or (7,)), generator=gen) * scale
    fire = mt_fire if neuron == "mt" else burst_fire
    x = fire(m.to(dtype), theta_pos.to(dtype), theta_neg.to(dtype), levels)
    histogram, most = SpikeStatistics(MTNeuron(theta_pos, theta_neg, levels, neuron=neuron))(x)
    planes = spike_planes(x, theta_pos.to(dtype), theta_neg.to(dtype), levels)
    assert torch.equal(histogram, planes.sum((1, 2)).view(2, levels).long())
    assert most == planes.sum(0).max()


@pytest.mark.parametrize("shape", [(), (7,)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_level_histogram_with_levels_per_octave(shape, dtype):
    # levels θ·2^(k/3) share their exponent bits: read with a logarithm instead
    gen = torch.Generator().manual_seed(4)
    theta_pos, theta_neg = torch.rand(shape, generator=gen) + 0.05, torch.rand(shape, generator=gen) + 0.05
    m = torch.randn(30, *(shape or (7,)), generator=gen) * 20
    thresholds = theta_pos.to(dtype), theta_neg.to(dtype)
    x = mt_fire(m.to(dtype), *thresholds, 22, "nearest", 3)
    histogram, most = SpikeStatistics(MTNeuron(theta_pos, theta_neg, 22, per_octave=3))(x)
    planes = spike_planes(x, *thresholds, 22, 3)
    assert torch.equal(histogram, planes.sum((1, 2)).view(2, 22).long())
    assert histogram.sum() == (x != 0).sum() and most == 1


def test_burst_counts_from_top_bits_on_every_count():
    # every count on both sides, for thresholds at and around binade edges: the code table tells
    # them apart, and reads the same histogram as the division does
    for theta in (1.0, 0.75, 1.0 - 2**-20, 0.3, 1e-3):
        theta_pos, theta_neg = torch.tensor(theta), torch.tensor(theta * 1.37)
        assert _burst_codes(theta_pos, theta_neg, 8, torch.float32) is not None
        counts = torch.arange(-255.0, 256.0)
        x = burst_fire(counts * torch.where(counts < 0, theta_neg, theta_pos), theta_pos, theta_neg, 8)
        histogram, most = SpikeStatistics(MTNeuron(theta_pos, theta_neg, 8, neuron="burst"))(x)
        planes = spike_planes(x, theta_pos, theta_neg, 8)
        assert torch.equal(histogram, planes.sum(1).view(2, 8).long()) and most == 8


def test_level_histogram_by_hand():
    theta = torch.tensor(0.5)
    x = torch.tensor([0.0, 0.5, 0.5, 1.0, 4.0, -0.5, -2.0, 0.0])
    histogram, most = SpikeStatistics(MTNeuron(theta, theta, 4))(x)
    assert histogram.tolist() == [[2, 1, 0, 1], [1, 0, 1, 0]]
    assert most == 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("neuron", ["mt", "burst"])
def test_account_on_device_counts_what_the_cpu_counts(neuron, device, images):
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration, neuron=neuron, threshold="mse")
    reference = transpike.account(snn, x, 3)
    report = transpike.account(snn.to(device), x.to(device), 3)
    # the same network up to rounding (a spike may move): the same counts to within a percent
    assert report.acs == pytest.approx(reference.acs, rel=0.01)
    histograms = [torch.tensor(r.level_histogram) for r in (report, reference)]
    assert torch.allclose(*histograms, rtol=0.01, atol=0.5)
    assert report.max_spikes_per_neuron_step == reference.max_spikes_per_neuron_step


def test_site_rates_and_report_contents(images):
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration)
    report = transpike.account(snn, x, 4)
    site = next(s for s in report.sites if s["path"] == "blocks.0.mlp.fc1.neuron")
    assert site["neurons"] == 17 * 24
    assert all(0 <= r <= 1 for r in site["firing_rate"])
    assert site["cumulative_firing_rate"][-1] == pytest.approx(sum(site["firing_rate"]) / 4)
    assert sum(map(sum, site["level_histogram"])) == pytest.approx(sum(site["firing_rate"]) * site["neurons"])
    roles = {(row["path"], row["role"]) for row in report.analog}
    assert ("patch_embed.proj", "direct-input") in roles
    # a block's norm and the final norm take and hand on rates: F alone, no EC bookkeeping left
    for norm in ("blocks.0.norm1", "norm"):
        assert (norm, "ann-nonlinear") in roles and (norm, "ec") not in roles
    assert all(full > ecmt for full, ecmt in zip(report.ratio["full"], report.ratio["ecmt"], strict=True))
    assert report.ratio["ecmt"] == sorted(report.ratio["ecmt"])  # cumulative cost grows with t
    assert "energy SNN/ANN" in str(report)
    assert set(report.to_dict()) >= {"ann_macs", "energy_ratio", "layers", "sites", "level_histogram"}


def test_sit_formula_by_hand():
    model = nn.Sequential(nn.Linear(4, 2)).eval()
    snn = transpike.convert(model, torch.randn(32, 4))
    x = torch.randn(3, 4)
    report = transpike.account(snn, x, 2)
    rate = torch.tensor(report.sites[0]["firing_rate"])
    assert report.ratio["sit"] == pytest.approx((E_AC / E_MAC * rate.cumsum(0)).tolist())


def test_counting_is_off_without_a_monitor(images):
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration)
    plain = snn.simulate(x, 4)
    with SpikeMonitor(snn):
        monitored = snn.simulate(x, 4)
    assert torch.equal(plain, monitored)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in snn.modules())
    count_dense_work(snn, x)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in snn.modules())


def test_dense_count_charges_a_layer_handing_on_rates_its_gemm_only(images):
    # its rate is one GEMM on the spike sum (1/t and the bias in it); counting must not hook the
    # layer itself, which would make it compute X/t and then call the layer
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration)
    work = count_dense_work(snn, x)
    fc1 = snn.network.blocks[0].mlp.fc1
    assert fc1.emits_rate
    assert work.macs[("blocks.0.mlp.fc1", "weight")] == 17 * 24 * 96
    assert work.elementwise.get(("blocks.0.mlp.fc1", "weight"), 0) == 0
    assert not any(path.endswith(".layer") for path, role in work.macs if role == "direct-input")


def test_energy_constants_are_configurable(images):
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration)
    default = transpike.account(snn, x, 2)
    cheap = transpike.account(snn, x, 2, e_mac=4.6, e_ac=0.45)
    assert cheap.ratio["ecmt"] == pytest.approx([r / 2 for r in default.ratio["ecmt"]])


def test_arithmetic_is_horowitz_table():
    """A MAC is a multiply and an add, an AC the add alone (45 nm, Horowitz 2014); fp32 is the default."""
    assert (
        ARITHMETIC["fp32"]
        == dict(e_mac=E_MAC, e_ac=E_AC, e_float=E_FLOAT)
        == dict(e_mac=4.6, e_ac=0.9, e_float=4.6)
    )
    assert ARITHMETIC["fp16"] == dict(e_mac=1.5, e_ac=0.4, e_float=1.5)  # 1.1 + 0.4
    assert ARITHMETIC["int8"] == dict(e_mac=0.3, e_ac=0.1, e_float=4.6)  # 0.2 + 0.1: 32-bit sums; fp32 floats


def test_each_operation_is_priced_apart(images):
    """The full form by hand: synaptic ACs at e_ac, analog MACs at e_mac and elementwise float
    operations at e_float, in the SNN after t steps and in the ANN; the ECMT form ignores e_float."""
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration)
    fp32 = transpike.account(snn, x, 3)
    report = transpike.account(snn, x, 3, **ARITHMETIC["int8"])
    assert report.acs == fp32.acs and report.ann_macs == fp32.ann_macs
    repriced = fp32.priced(**ARITHMETIC["int8"])  # the same counts, no second simulation
    assert repriced.to_dict() == report.to_dict() and fp32.e_ac == 0.9
    macs = report.snn_analog_macs_per_step
    assert 0 < macs < report.snn_float_ops_per_step  # the patch embedding's MACs and the float work
    floats = report.snn_float_ops_per_step - macs
    steps = torch.arange(1, 4, dtype=torch.float64)
    assert report.neurons == sum(site["neurons"] for site in report.sites)  # each updated at every step
    per_step = 0.1 * report.neurons + 0.3 * macs + 4.6 * floats
    snn_energy = 0.1 * torch.tensor(report.acs, dtype=torch.float64).cumsum(0) + steps * per_step
    assert report.snn_energy == pytest.approx(snn_energy.tolist())
    assert report.ann_energy == pytest.approx(0.3 * report.ann_macs + 4.6 * report.ann_float_ops)
    assert report.ratio["full"] == pytest.approx((snn_energy / report.ann_energy).tolist())
    assert report.ratio["ecmt"] == pytest.approx([r * (0.1 / 0.3) / (0.9 / 4.6) for r in fp32.ratio["ecmt"]])
    floating = transpike.account(snn, x, 3, e_float=1.0)
    assert floating.ratio["ecmt"] == fp32.ratio["ecmt"] and floating.ratio["full"] != fp32.ratio["full"]
    assert report.to_dict()["e_float_pj"] == 4.6 and "4.6 per float op" in str(report)
    for t in (1, 2, 3):  # the parts of the SNN's energy add up to it at every t
        parts = report.breakdown(t)
        assert sum(parts.values()) == pytest.approx(report.snn_energy[t - 1])
        assert parts["direct-input"] == pytest.approx(t * 0.3 * macs)  # the patch embedding's MACs
        assert parts["weight"] + parts["product"] == pytest.approx(0.1 * sum(report.acs[:t]))
        assert parts["neuron"] == pytest.approx(t * 0.1 * report.neurons)
    assert report.to_dict()["breakdown_pj"] == report.breakdown(3)
    written = json.loads(json.dumps(report.to_dict()))  # as results.json keeps it
    assert EnergyReport.from_dict(written) == report and EnergyReport.from_dict(written).priced() == fp32
    assert "where it goes after t = 3 (full form): " in str(report)
    with pytest.raises(ValueError, match=r"t = 4: the report covers t = 1..3"):
        report.breakdown(4)
    first = next((t for t in (1, 2, 3) if report.ratio["full"][t - 1] > 1), None)
    assert report.costlier_from() == first == report.to_dict()["costlier_from"]["full"]
    assert report.costlier_from("ecmt") is None  # 3 steps of ACs at a third of a MAC each: < 1
    assert (f"from t = {first} on" if first else "within t <= 3 the SNN spends less") in str(report)


@pytest.mark.parametrize("name, value", [("e_ac", -0.1), ("e_mac", float("nan")), ("e_float", float("inf"))])
def test_bad_energy_per_operation_is_refused_by_name(name, value):
    snn = transpike.convert(nn.Sequential(nn.Linear(4, 2)).eval(), torch.randn(32, 4))
    with pytest.raises(ValueError, match=f"{name} = {value}: the energy of one operation"):
        transpike.account(snn, torch.randn(3, 4), 2, **{name: value})
    with pytest.raises(ValueError, match=f"{name} = {value}: the energy of one operation"):
        transpike.account(snn, torch.randn(3, 4), 2).priced(**{name: value})


@pytest.mark.parametrize("norm_spikes", [1024, None])
def test_spiking_softmax_is_charged_its_spikes(images, norm_spikes):
    """Under SIT the ANN is the same (its own softmax counted, not the spiking one's float ops), and
    each spiking softmax costs its SI-exp spikes, two ACs per element and its SI-norm spikes (N
    given, or by default 2^12 for rows of 17)."""
    calibration, x = images
    model = tiny_vit()
    ecmt = transpike.account(transpike.convert(model, calibration), x, 3)
    snn = transpike.convert(model, calibration, method="sit", sit_norm_spikes=norm_spikes)
    n = norm_spikes or 2**12
    seen: dict[str, list] = {}

    def record(module, inputs, out):  # a forward hook returning None keeps the output
        seen.setdefault(paths[module], []).append((inputs[0], out))

    paths = {m: path for path, m in snn.network.named_modules() if isinstance(m, SpikingSoftmax)}
    for module in paths:
        module.register_forward_hook(record)
    report = transpike.account(snn, x, 3)
    assert (report.ann_macs, report.ann_float_ops) == (ecmt.ann_macs, ecmt.ann_float_ops)
    # the simulation's float work is ECMT's without the softmaxes (one op per element there)
    assert report.snn_float_ops_per_step == pytest.approx(ecmt.snn_float_ops_per_step - 2 * 3 * 17 * 17)
    assert [row["path"] for row in report.softmaxes] == [f"blocks.{i}.attn.softmax.f" for i in (0, 1)]
    for row in report.softmaxes:
        module = snn.network.get_submodule(row["path"])
        assert row["elements"] == 3 * 17 * 17  # heads × tokens × tokens, per sample
        for t, (rate, out) in enumerate(seen[row["path"]][-3:]):  # the accounted run
            trains = fs_spikes(module.exp_input(rate), module.T, module.h)
            assert row["si_exp_spikes"][t] == pytest.approx(trains.sum().item() / len(x))
            assert row["si_norm_spikes"][t] == pytest.approx((out * n).sum().item() / len(x))
            # a row's spikes are N times its sum, to within half a spike per entry
            assert (out.sum(-1) * n - n).abs().max() <= 17 / 2
            assert row["acs"][t] == pytest.approx(
                row["si_exp_spikes"][t] + row["si_norm_spikes"][t] + 2 * 867
            )
    softmax_acs = torch.tensor([row["acs"] for row in report.softmaxes]).sum(0)
    assert report.softmax_acs == pytest.approx(softmax_acs.tolist())
    steps = torch.arange(1, 4)
    full = E_AC * (torch.tensor(report.acs) + softmax_acs).cumsum(0) + steps * (
        E_AC * report.neurons + E_MAC * report.snn_float_ops_per_step
    )
    assert report.ratio["full"] == pytest.approx(
        (full / (E_MAC * (report.ann_macs + report.ann_float_ops))).tolist()
    )
    assert "SI-norm spikes" in str(report) and "softmaxes" in report.to_dict()
    parts = report.breakdown(2)  # the spiking softmaxes' ACs, apart from the weight layers'
    assert parts["softmax"] == pytest.approx(E_AC * softmax_acs[:2].sum().item())
    assert sum(parts.values()) == pytest.approx(report.snn_energy[1])
    assert ecmt.softmaxes == [] and ecmt.softmax_acs == [0.0] * 3
    # counting sees SI-exp's spikes as they are made, changes no output, and stops with the monitor
    plain = snn.simulate(x, 3)
    with SpikeMonitor(snn):
        assert torch.equal(snn.simulate(x, 3), plain)
    assert all(m.observe is None for m in snn.modules() if isinstance(m, SpikingSoftmax))


def test_fused_network_is_counted_as_unfused(images):
    """A spike monitor on fused neurons (SI-exp counting its spikes inside its kernel) sees the spikes
    the unfused network makes: the same report."""
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration, method="sit")
    plain = transpike.account(snn, x, 3).to_dict()
    assert transpike.account(snn.fuse(), x, 3).to_dict() == plain
