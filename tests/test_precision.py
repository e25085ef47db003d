"""Synaptic precision (``weight_bits``): the weights of the layers fed by spikes on a b-bit grid."""

import copy

import pytest
import torch
from conftest import ann_output, assert_round_trip, random_images, relative_error, tiny_vit
from test_hybrid import hybrid
from test_torch_transformer import TorchViT
from torch import nn
from torch.utils.data import TensorDataset

import transpike
from transpike import SpikingLayer
from transpike.evaluate import evaluate
from transpike.io import rebuild_ann
from transpike.precision import quantize, quantized_layer, weight_scale
from transpike.results import format_table
from transpike.rules import rule_for
from transpike.trace import rounding, trace


def synapses(snn) -> dict[str, SpikingLayer]:
    return {path: m for path, m in snn.network.named_modules() if isinstance(m, SpikingLayer)}


def test_quantize_by_hand():
    weight = torch.tensor([[0.5, -1.0, 0.26], [0.0, 0.0, 0.0], [0.1, 0.2, -0.3]])
    # 3 bits: q = 3; row 0: s = 1/3, W/s = [1.5, -3, 0.78] -> [2, -3, 1] (half to even)
    assert torch.allclose(
        quantize(weight, 3, 0),
        torch.tensor([[2 / 3, -1.0, 1 / 3], [0.0, 0.0, 0.0], [0.1, 0.2, -0.3]]),
    )
    # one scale for the tensor: s = 1/3; 0.1/s = 0.3 -> 0, 0.2/s = 0.6 -> 1, -0.3/s = -0.9 -> -1
    assert torch.allclose(
        quantize(weight, 3, None),
        torch.tensor([[2 / 3, -1.0, 1 / 3], [0.0, 0.0, 0.0], [0.0, 1 / 3, -1 / 3]]),
    )


def test_mse_scale_by_hand():
    """2 bits, grid {-s, 0, s}: for [3, 2, 2, 2] "max" takes s = 3 (2/3 rounds to 1: squared error 3),
    "mse" the s minimizing (3 - s)² + 3·(2 - s)², s = 9/4 = 0.75·max (error 0.75); a slice of zeros
    keeps the step 1/q = 1."""
    weight = torch.tensor([[3.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.equal(quantize(weight, 2, 0), torch.tensor([[3.0] * 4, [0.0] * 4]))
    assert torch.allclose(quantize(weight, 2, 0, "mse"), torch.tensor([[2.25] * 4, [0.0] * 4]))
    assert torch.allclose(weight_scale(weight, 2, 0, "mse"), torch.tensor([[2.25], [1.0]]))
    assert torch.equal(weight_scale(weight, 2, 0), torch.tensor([[3.0], [1.0]]))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_mse_scale_never_rounds_worse_than_max(bits):
    weight = torch.randn(16, 200, generator=torch.Generator().manual_seed(1))
    errors = [(quantize(weight, bits, 0, m) - weight).square().sum(1) for m in ("max", "mse")]
    assert (errors[1] <= errors[0]).all()
    if bits <= 4:  # Gaussian weights: clipping the tails pays on every channel
        assert (errors[1] < errors[0]).all()
    whole = [(quantize(weight, bits, None, m) - weight).square().sum() for m in ("max", "mse")]
    assert whole[1] <= whole[0]


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantize_keeps_at_most_2b_minus_1_values_within_half_a_step(bits):
    weight = torch.randn(6, 40, generator=torch.Generator().manual_seed(0))
    q = quantize(weight, bits, 0)
    step = weight.abs().amax(1, keepdim=True) / (2 ** (bits - 1) - 1)
    assert all(len(row.unique()) <= 2**bits - 1 for row in q)
    assert torch.allclose(q / step, (q / step).round(), atol=1e-5)  # on each row's grid
    assert ((q - weight).abs() <= step / 2 + 1e-7).all()
    assert torch.allclose(q.abs().amax(1), weight.abs().amax(1))  # the largest weight is on the grid


def test_transposed_convolution_scales_per_output_channel():
    conv = nn.ConvTranspose2d(3, 5, 2)  # weight [in 3, out 5, 2, 2]
    before = conv.weight.detach().clone()
    layer, original = quantized_layer(conv, rule_for(conv), 4, "channel")
    assert torch.equal(original, before)
    largest = original.abs().amax(dim=(0, 2, 3))
    assert torch.allclose(layer.weight.abs().amax(dim=(0, 2, 3)), largest)
    steps = (layer.weight / (largest / 7).view(1, 5, 1, 1)).detach()
    assert torch.allclose(steps, steps.round(), atol=1e-5)


def test_synapses_are_quantized_before_calibration(images):
    """Every layer fed by spikes is on its grid; the input layer, biases and norms stay float;
    the thresholds are those of the float conversion of the ANN holding the rounded weights."""
    calibration, x = images
    model = tiny_vit()
    snn = transpike.convert(model, calibration, weight_bits=4)
    layers = synapses(snn)
    assert len(layers) == 9  # 4 per block and the head
    rounded = copy.deepcopy(model)
    for path, spiking in layers.items():
        weight = spiking.layer.weight
        assert torch.allclose(quantize(weight, 4, 0), weight)
        assert not torch.equal(weight, spiking.ann_weight)
        assert torch.equal(spiking.ann_weight, model.get_submodule(path).weight)
        assert torch.equal(spiking.layer.bias, model.get_submodule(path).bias)
        rounded.get_submodule(path).weight.data = weight.clone()
    assert torch.equal(snn.network.patch_embed.proj.weight, model.patch_embed.proj.weight)
    reference = transpike.convert(rounded, calibration)
    for (path, spiking), other in zip(layers.items(), synapses(reference).values(), strict=True):
        assert torch.equal(spiking.neuron.theta_pos, other.neuron.theta_pos), path
    assert torch.equal(snn.simulate(x, 4), reference.simulate(x, 4))
    assert set(snn.ann_state_dict()) == set(model.state_dict())
    assert all(torch.equal(value, model.state_dict()[k]) for k, value in snn.ann_state_dict().items())


def test_mse_scale_in_conversion(images):
    """``weight_scale="mse"`` stores each synapse on its least-squares grid (the output's error need
    not fall with the weights': BENCHMARKS.md §1 and §2)."""
    calibration, _ = images
    model = tiny_vit()
    snn = transpike.convert(model, calibration, weight_bits=3, weight_scale="mse")
    for path, spiking in synapses(snn).items():
        weight = model.get_submodule(path).weight.detach()
        assert torch.equal(spiking.layer.weight, quantize(weight, 3, 0, "mse"))
        assert not torch.equal(spiking.layer.weight, quantize(weight, 3, 0))
    with pytest.raises(ValueError, match="weight_scale must be one of"):
        transpike.convert(model, calibration, weight_bits=3, weight_scale="percentile")


def test_more_bits_come_closer_to_the_float_network(images):
    calibration, x = images
    model = tiny_vit()
    ref = ann_output(model, x)
    errors = [
        relative_error(transpike.convert(model, calibration, weight_bits=bits, neuron="burst",
                                         threshold="mse").simulate(x, 16)[-1], ref)
        for bits in (3, 5, 16)
    ]  # fmt: skip
    float_error = relative_error(
        transpike.convert(model, calibration, neuron="burst", threshold="mse").simulate(x, 16)[-1], ref
    )
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] == pytest.approx(float_error, abs=1e-3)


@pytest.mark.parametrize("granularity", ["channel", "tensor"])
def test_quantized_network_round_trips_with_its_float_ann(tmp_path, images, granularity):
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration, weight_bits=5, weight_granularity=granularity)
    assert snn.options["weight_bits"] == 5 and snn.options["weight_granularity"] == granularity
    assert_round_trip(snn, tiny_vit, x, tmp_path / "q.safetensors")
    float_snn = transpike.convert(tiny_vit(), calibration)
    assert snn.digest() != float_snn.digest()


def test_packed_projection_gives_back_its_float_weights(tmp_path):
    """nn.MultiheadAttention's packed in_proj_weight: its twin's qkv layer is rounded, the
    ANN rebuilt from the network gets the float one."""

    def build():
        torch.manual_seed(0)
        return TorchViT().eval()

    calibration, x = random_images(16, counts=(8, 3))
    snn = transpike.convert(build(), calibration, weight_bits=6)
    qkv = snn.network.get_submodule("encoder.layers.0.self_attn.qkv")
    assert torch.allclose(quantize(qkv.layer.weight, 6, 0), qkv.layer.weight)
    assert_round_trip(snn, build, x, tmp_path / "torch.safetensors")


def test_standardized_convolution_stores_its_computed_weight_rounded():
    """A weight-standardized convolution becomes the plain one on the rounded standardized weight;
    the ANN gets the raw weight back."""
    calibration, x = random_images(32, counts=(8, 2))
    model = hybrid("resnetv2")
    snn = transpike.convert(model, calibration, weight_bits=8)
    standardized = [(p, m) for p, m in synapses(snn).items() if "stages" in p]
    assert standardized
    for path, spiking in standardized:
        original = model.get_submodule(path)
        plain = rule_for(original).plain(original)
        assert type(spiking.layer) is type(plain)
        assert torch.allclose(spiking.layer.weight, quantize(plain.weight, 8, 0))
        assert torch.equal(spiking.ann_weight, original.weight)
    with torch.no_grad():
        assert torch.equal(rebuild_ann(snn, hybrid("resnetv2"))(x), model(x))
    assert snn.simulate(x, 4).isfinite().all()


@pytest.mark.parametrize("bits", [1, 17, True, 8.0, "8"])
def test_bad_weight_bits_are_refused(images, bits):
    with pytest.raises(ValueError, match="weight_bits must be an integer in"):
        transpike.convert(tiny_vit(), images[0], weight_bits=bits)


def test_bad_weight_granularity_is_refused(images):
    with pytest.raises(ValueError, match="weight_granularity must be one of"):
        transpike.convert(tiny_vit(), images[0], weight_bits=8, weight_granularity="row")


def test_the_table_says_the_synapses_are_rounded(images):
    calibration, x = images
    model = tiny_vit()
    data = TensorDataset(x, torch.arange(len(x)) % 5)
    for granularity, per in (("channel", "output channel"), ("tensor", "layer")):
        snn = transpike.convert(model, calibration, weight_bits=3, weight_granularity=granularity)
        results = evaluate(snn, model, data, 2, progress=False, energy=False) | {"options": snn.options}
        table = format_table(results)
        assert f"synaptic weights rounded to 3 bits (one scale per {per})" in table
        # the ANN with the rounded weights, scored on the same samples
        options = transpike.ConversionOptions(weight_bits=3, weight_granularity=granularity)
        with torch.no_grad():
            right = (transpike.prepare(model, options)(x).argmax(-1) == data.tensors[1]).double().mean()
        assert results["rounded_ann_top1"] == pytest.approx(100 * right.item())
        rounded = results["rounded_ann_top1"]
        assert (
            f"the ANN with the rounded weights: top-1 {rounded:.2f} % ({rounded - results['ann_top1']:+.2f})"
            in table
        )
    snn = transpike.convert(model, calibration)
    results = evaluate(snn, model, data, 2, progress=False, energy=False) | {"options": snn.options}
    assert "rounded" not in format_table(results) and "rounded_ann_top1" not in results


def test_the_trace_compares_with_the_rounded_ann_and_rounding_says_how_far_it_is(images):
    """The trace's reference is the ANN holding the rounded weights (burst + mse converges to it);
    ``rounding`` gives that ANN's distance from the float one."""
    calibration, x = images
    model = tiny_vit()
    snn = transpike.convert(model, calibration, weight_bits=4, neuron="burst", threshold="mse")
    rounded = transpike.prepare(model, transpike.ConversionOptions(weight_bits=4))
    with torch.no_grad():
        reference, expected = rounded(x), model(x)
    traced = trace(snn, x, 16).output.error[-1]
    assert traced == pytest.approx(relative_error(snn.simulate(x, 16)[-1], reference))
    found = rounding(snn, model, x)
    assert found["weight_bits"] == 4
    assert found["output_error"] == pytest.approx(relative_error(reference, expected), rel=1e-5)
    assert found["output_error"] > 10 * traced  # here the rounding dominates
    same = (reference.argmax(-1) == expected.argmax(-1)).double().mean().item()
    assert found["agreement"] == pytest.approx(100 * same)
    # each synaptic layer alone rounded, the rest float: the head's by hand
    assert {row["path"] for row in found["layers"]} == set(synapses(snn))
    errors = [row["output_error"] for row in found["layers"]]
    assert errors == sorted(errors, reverse=True)
    head_only = copy.deepcopy(model)
    head_only.head.weight.data = quantize(model.head.weight.detach(), 4, 0)
    with torch.no_grad():
        by_hand = relative_error(head_only(x), expected)
    assert next(r for r in found["layers"] if r["path"] == "head")["output_error"] == pytest.approx(
        by_hand, rel=1e-4
    )
    assert rounding(transpike.convert(model, calibration), model, x) is None


def test_bits_at_takes_the_most_specific_path():
    at = {"blocks.1": 6, "blocks.1.mlp": None, "head": 8}
    options = transpike.ConversionOptions(weight_bits=4, weight_bits_at=at)
    paths = ("blocks.1.attn.qkv", "blocks.1.mlp.fc1", "blocks.10.mlp.fc1", "head")
    assert [options.bits_at(p) for p in paths] == [6, None, 4, 8]


def test_some_layers_keep_other_bits(tmp_path, images):
    calibration, x = images
    model = tiny_vit()
    at = {"head": 8, "blocks.0": None, "blocks.0.mlp.fc2": 6}
    snn = transpike.convert(model, calibration, weight_bits=3, weight_bits_at=at)
    for path, spiking in synapses(snn).items():
        weight, original = spiking.layer.weight, model.get_submodule(path).weight.detach()
        bits = snn.options["weight_bits_at"].get(path, None if path.startswith("blocks.0.") else 3)
        if bits is None:
            assert spiking.ann_weight is None and torch.equal(weight, original), path
        else:
            assert torch.equal(weight, quantize(original, bits, 0)), path
    # trace's itemized rounding: each layer at its own bits, the float ones left out
    found = {row["path"]: row["output_error"] for row in rounding(snn, model, x)["layers"]}
    assert set(found) == {p for p in synapses(snn) if not p.startswith("blocks.0.")} | {"blocks.0.mlp.fc2"}
    head_only = copy.deepcopy(model)
    head_only.head.weight.data = quantize(model.head.weight.detach(), 8, 0)
    with torch.no_grad():
        assert found["head"] == pytest.approx(relative_error(head_only(x), model(x)), rel=1e-4)
    assert_round_trip(snn, tiny_vit, x, tmp_path / "mixed.safetensors")
    assert transpike.load(tmp_path / "mixed.safetensors", tiny_vit()).options["weight_bits_at"] == at


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(weight_bits_at={"head": 8}), "give weight_bits"),
        (dict(weight_bits=4, weight_bits_at={"hed": 8}), "no synaptic layer .* under 'hed'; they are under"),
        (
            dict(weight_bits=4, weight_bits_at={"patch_embed": 8}),
            "no synaptic layer",
        ),  # direct coding: no synapse
        (dict(weight_bits=4, weight_bits_at={"head": 1}), r"weight_bits_at\['head'\] must be an integer"),
        (dict(weight_bits=4, weight_bits_at={"head": True}), r"weight_bits_at\['head'\] must be an integer"),
        (dict(weight_bits=4, weight_bits_at=[("head", 8)]), "weight_bits_at must map module paths to bits"),
    ],
)
def test_bad_weight_bits_at_is_refused(images, options, message):
    with pytest.raises(ValueError, match=message):
        transpike.convert(tiny_vit(), images[0], **options)
