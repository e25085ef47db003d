"""The trace: every converted module's error against the ANN at every t, and the ANN's sensitivity."""

import copy
import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY, ann_output, relative_error, tiny_vit

import transpike
from transpike import cli
from transpike.rates import link_rates
from transpike.trace import analog_network, sensitivity, trace


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(3)
    return torch.randn(32, 3, 16, 16, generator=gen), torch.randn(6, 3, 16, 16, generator=gen)


@pytest.mark.parametrize(
    "options",
    [
        {},
        dict(neuron="burst", threshold="mse"),
        dict(method="sit"),
        dict(method="sit", sit_mode="sigmoid"),
        dict(blocks=1),
        dict(compensation=False),
    ],
)
def test_the_output_row_is_the_simulations_error_and_the_analog_network_is_the_ann(data, options):
    calibration, x = data
    model = tiny_vit()
    ref = ann_output(model, x)
    snn = transpike.convert(model, calibration, **options)
    with torch.no_grad():
        assert relative_error(analog_network(snn.network)(x), ref) < 1e-6
    result = trace(snn, x, 6)
    y = snn.simulate(x, 6)
    assert result.output.path == "<output>" and result.output.input_error is None
    assert result.output.error == pytest.approx(
        [relative_error(y[t], ref) for t in range(6)], rel=1e-4, abs=1e-6
    )
    kinds = {row.kind for row in result.rows}
    assert {"neuron", "layer", "product", "ec", "output"} <= kinds
    assert ("analog" in kinds) == ("blocks" in options)
    assert all(len(row.error) == 6 and len(row.input_error or row.error) == 6 for row in result.rows)
    same = (y.argmax(-1) == ref.argmax(-1)).double().mean(-1) * 100  # per t: samples decided as the ANN
    assert result.agreement == pytest.approx(same.tolist())


def test_rows_follow_the_forward_and_each_neuron_precedes_its_module(data):
    calibration, x = data
    result = trace(transpike.convert(tiny_vit(), calibration), x, 2)
    paths = [row.path for row in result.rows]
    assert paths[:6] == [
        "blocks.0.norm1",
        "blocks.0.attn.qkv.neuron",
        "blocks.0.attn.qkv",
        "blocks.0.attn.qk.neuron_a",
        "blocks.0.attn.qk.neuron_b",
        "blocks.0.attn.qk",
    ]
    assert paths[-3:] == ["head.neuron", "head", "<output>"]
    types = {row.path: row.type for row in result.rows}
    assert types["blocks.0.attn.qk"] == "matmul product" and types["blocks.0.mlp.act"] == "GELU"
    assert types["blocks.0.attn.qkv.neuron"] == "Linear"
    # the image reaches the first norm exactly (direct coding); its neuron's input is exact too
    rows = {row.path: row for row in result.rows}
    assert rows["blocks.0.norm1"].error == [0.0, 0.0] and rows["blocks.0.attn.qkv.neuron"].input_error == [
        0,
        0,
    ]


def test_a_neurons_errors_are_its_rates_against_the_anns_value(data):
    """By hand for one operand neuron: its input rate and its spike rate against the ANN's operand;
    the product's input error is its two neurons' errors taken together."""
    calibration, x = data
    snn = transpike.convert(tiny_vit(), calibration)
    analog = analog_network(snn.network)
    operands = {}
    analog.get_submodule("blocks.1.attn.qk").register_forward_hook(
        lambda m, i, o: operands.update(a=i[0], b=i[1])
    )
    with torch.no_grad():
        analog(x)
    neuron = snn.network.get_submodule("blocks.1.attn.qk.neuron_a")
    currents, spikes = [], []

    def keep(module, args, output):
        currents.append(args[0].clone())
        spikes.append(output.clone())

    neuron.register_forward_hook(keep)
    snn.simulate(x, 5)
    assert neuron.takes_rate  # it reads the layer's rate, so its input is the rate itself
    rate = torch.stack(spikes).cumsum(0) / torch.arange(1, 6).view(-1, 1, 1, 1, 1)
    a, b = operands["a"], operands["b"]
    input_error = [relative_error(c, a) for c in currents]
    error = [relative_error(r, a) for r in rate]
    top = [torch.where(s > 0, neuron.theta_pos, neuron.theta_neg) * 2 ** (neuron.levels - 1) for s in spikes]
    shares = [(s.abs() >= t * 0.999999).double().mean().item() for s, t in zip(spikes, top, strict=True)]
    rows = {row.path: row for row in trace(snn, x, 5).rows}
    row = rows["blocks.1.attn.qk.neuron_a"]
    assert row.input_error == pytest.approx(input_error, rel=1e-5)
    assert row.error == pytest.approx(error, rel=1e-5)
    assert row.saturation == pytest.approx(shares)
    other = rows["blocks.1.attn.qk.neuron_b"]
    joint = [
        math.sqrt(((ea * a.norm()) ** 2 + (eb * b.norm()) ** 2) / (a.norm() ** 2 + b.norm() ** 2))
        for ea, eb in zip(row.error, other.error, strict=True)
    ]
    assert rows["blocks.1.attn.qk"].input_error == pytest.approx(joint, rel=1e-5)


def test_rates_and_increments_give_the_same_trace(data):
    """A network whose modules hand on rates and the same network passing increments: the trace
    reads each module's output as what it is, so both give the same errors (up to rounding, which
    may move a spike)."""
    calibration, x = data
    snn = transpike.convert(tiny_vit(), calibration, neuron="burst", threshold="mse")
    unlinked = copy.deepcopy(snn)
    link_rates(unlinked.network, enabled=False)
    linked, plain = trace(snn, x, 8), trace(unlinked, x, 8)
    assert [r.path for r in linked.rows] == [r.path for r in plain.rows]
    for a, b in zip(linked.rows, plain.rows, strict=True):
        assert a.error == pytest.approx(b.error, rel=0.02, abs=1e-4), a.path
        assert (a.input_error is None) == (b.input_error is None)
    # with burst neurons every module gets close to the ANN
    assert max(row.error[-1] for row in linked.rows) < 0.05


def test_trace_leaves_the_network_as_it_was(data):
    calibration, x = data
    snn = transpike.convert(tiny_vit(), calibration, method="sit")
    before = snn.simulate(x, 4)
    trace(snn, x, 4)
    sensitivity(snn, x)
    assert torch.equal(snn.simulate(x, 4), before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in snn.network.modules())


def test_worst_summary_and_files_data(data):
    calibration, x = data
    result = trace(transpike.convert(tiny_vit(), calibration), x, 4)
    worst = result.worst(3)
    assert len(worst) == 3 and worst[0].added(4) >= worst[1].added(4) >= worst[2].added(4)
    assert all(worst[-1].added(4) >= row.added(4) for row in result.rows[:-1] if row not in worst)
    summary = result.summary(3)
    assert "<output>" in summary and worst[0].path in summary and "same top-1 as the ANN: t=1: " in summary
    assert all(row.path in str(result) for row in result.rows)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["time_steps"] == 4 and len(data["rows"]) == len(result.rows) and len(data["agreement"]) == 4


def test_sensitivity_measures_the_anns_amplification():
    """An ANN whose one MT site feeds an identity layer passes the noise on unchanged: its output
    error is the noise's relative size, whatever the seed; a layer that adds a large constant damps
    it."""
    model = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(8, 8)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(8))
        model[1].bias.zero_()
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    snn = transpike.convert(model, torch.randn(64, 8))
    assert [row.role for row in snn.report().rows] == ["ec", "mt+weight"]
    assert sensitivity(snn, x, 0.01) == pytest.approx(0.01, rel=1e-5)
    assert sensitivity(snn, x, 0.1) == pytest.approx(0.1, rel=1e-5)
    assert sensitivity(snn, x, 0.01, seed=1) == pytest.approx(0.01, rel=1e-5)
    with torch.no_grad():
        model[1].bias.fill_(100.0)
    assert sensitivity(transpike.convert(model, torch.randn(64, 8)), x, 0.01) < 0.001


@pytest.mark.filterwarnings("ignore:levels_per_octave > 1 pays")  # percentile thresholds, on purpose
@pytest.mark.parametrize(  # levels 1, 2^(1/3), 2^(2/3), 2 with 3 to an octave
    "neuron, levels, per_octave, top", [("mt", 2, 1, 2.0), ("burst", 2, 1, 3.0), ("mt", 4, 3, 2.0)]
)
def test_saturation_is_the_share_of_outputs_at_the_top_level(neuron, levels, per_octave, top):
    """Inputs far above the calibrated range fire the top level every step (θ·2^((n-1)/s), or
    θ·(2^n - 1) for burst neurons); inputs inside it, never. Only neuron rows have a saturation."""
    model = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(8, 8)).eval()
    snn = transpike.convert(
        model, torch.rand(64, 8), levels=levels, neuron=neuron, levels_per_octave=per_octave
    )
    neuron_module = snn.network.get_submodule("1.neuron")
    far = torch.full((4, 8), 100.0)
    rows = {row.path: row for row in trace(snn, far, 5).rows}
    assert rows["1.neuron"].saturation == [1.0] * 5
    assert rows["1"].saturation is None and rows["0"].saturation is None
    # at the top level exactly: its largest output is top·θ1
    spikes = []
    neuron_module.register_forward_hook(lambda m, args, out: spikes.append(out.clone()) and None)
    snn.simulate(far, 1)
    assert torch.allclose(spikes[0], neuron_module.theta_pos * top)
    inside = torch.rand(4, 8, generator=torch.Generator().manual_seed(0)) * neuron_module.theta_pos
    assert rows and max(trace(snn, inside, 5).rows[1].saturation) == 0.0


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_bad_time_steps_are_refused(data, steps):
    calibration, x = data
    snn = transpike.convert(tiny_vit(), calibration)
    with pytest.raises(ValueError, match="time_steps"):
        trace(snn, x, steps)


@pytest.mark.parametrize("noise", [0, -0.1, "0.1"])
def test_bad_noise_is_refused(data, noise):
    calibration, x = data
    with pytest.raises(ValueError, match="noise"):
        sensitivity(transpike.convert(tiny_vit(), calibration), x, noise)


def test_the_trace_command(tmp_path, capsys):
    gen = torch.Generator().manual_seed(0)
    path = tmp_path / "data.npz"
    np.savez(path, x=torch.rand(12, 3, 16, 16, generator=gen).numpy(), y=np.arange(12) % 4)
    model = ["--model", "vit_tiny_patch16_224", "--model-kwargs"]
    model += [f"{k}={v}" for k, v in {**TINY, "num_classes": 4}.items()]
    out = tmp_path / "trace"
    argv = ["trace", *model, "--calib", f"npz:{path}", "--data", f"npz:{path}", "--time-steps", "4"]
    assert cli.main([*argv, "--samples", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "<output>" in printed and "the ANN's output error with noise" in printed
    assert "5 of the 5 traced samples were calibration samples" in printed  # calibrated on the same data
    saved = json.loads((out / "trace.json").read_text())
    assert saved["calibration_samples"] == 5 and saved["command"].startswith("transpike trace --model ")
    assert saved["samples"] == 5 and saved["time_steps"] == 4 and saved["rows"][-1]["path"] == "<output>"
    assert saved["sensitivity"]["noise"] == 0.01 and saved["sensitivity"]["output_error"] > 0
    assert saved["rounding"] is None  # float synapses
    lines = (out / "trace.csv").read_text().splitlines()
    assert lines[0].startswith("index,path,kind,type,scale,error_t1") and len(lines) == len(saved["rows"]) + 1
    assert lines[0].endswith("saturation_t4") and saved["rows"][1]["saturation"] is not None
    assert (out / "trace.png").stat().st_size > 1000
    # a saved network traces the same, and nothing is written into a results directory in use
    snn_file = tmp_path / "snn.safetensors"
    assert cli.main(["convert", *model, "--calib", f"npz:{path}", "--out", str(snn_file)]) == 0
    again = tmp_path / "again"
    base = ["trace", "--data", f"npz:{path}", "--time-steps", "4", "--samples", "5"]
    assert cli.main([*base, "--snn", str(snn_file), "--out", str(again)]) == 0
    assert json.loads((again / "trace.json").read_text())["rows"] == saved["rows"]
    other = tmp_path / "other.npz"  # other images: none was calibrated on
    np.savez(other, x=torch.rand(6, 3, 16, 16, generator=gen).numpy(), y=np.arange(6) % 4)
    unseen = ["trace", "--data", f"npz:{other}", "--time-steps", "2", "--snn", str(snn_file)]
    assert cli.main([*unseen, "--out", str(tmp_path / "unseen")]) == 0
    assert "none of the traced samples was a calibration sample" in capsys.readouterr().out
    assert json.loads((tmp_path / "unseen" / "trace.json").read_text())["calibration_samples"] == 0
    rounded = tmp_path / "rounded"  # synapses of 4 bits: what the rounding alone costs, printed and saved
    assert cli.main([*argv, "--samples", "5", "--weight-bits", "4", "--out", str(rounded)]) == 0
    printed = capsys.readouterr().out
    assert "with its synapses rounded to 4 bits, the ANN the trace compares with is" in printed
    saved = json.loads((rounded / "trace.json").read_text())["rounding"]
    assert saved["weight_bits"] == 4 and saved["output_error"] > 0 and 0 <= saved["agreement"] <= 100
    assert "the synaptic layers whose rounding alone moves the ANN's output most" in printed
    errors = [row["output_error"] for row in saved["layers"]]
    assert len(errors) == 9 and errors == sorted(errors, reverse=True)  # 4 per block and the head
    assert cli.main([*base, "--snn", str(snn_file), "--out", str(out)]) == 2
    assert cli.main([*base, "--snn", str(snn_file), "--levels", "4", "--out", str(tmp_path / "x")]) == 2
    assert cli.main([*base, "--snn", str(snn_file), "--noise", "0", "--out", str(tmp_path / "y")]) == 2
    assert "--noise" in capsys.readouterr().err
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 3, 16, 16), np.float32), y=np.zeros(0, np.int64))
    base[2] = f"npz:{empty}"
    assert cli.main([*base, "--snn", str(snn_file), "--out", str(tmp_path / "z")]) == 2
    assert "holds no samples" in capsys.readouterr().err
