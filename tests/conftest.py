import copy
import math

import pytest
import timm
import torch

import transpike
from transpike import ConversionOptions, ExpectationCompensation, SpikingLayer, SpikingProduct, prepare
from transpike.io import rebuild_ann
from transpike.model import SpikingModel
from transpike.rates import link_rates
from transpike.trace import analog_network

# The GPU path runs where CUDA is present (the device machine); CI has the CPU only.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
TINY = dict(img_size=16, patch_size=4, embed_dim=24, depth=2, num_heads=3, num_classes=5)


def tiny_vit(name: str = "vit_tiny_patch16_224", seed: int = 0, **kwargs) -> torch.nn.Module:
    """A random-init timm ViT small enough for unit tests (16 px, 17 tokens, 2 blocks)."""
    torch.manual_seed(seed)
    return timm.create_model(name, **{**TINY, **kwargs}).eval()


def ann_output(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The ANN's output on x: the reference spiking outputs are compared with."""
    with torch.no_grad():
        return model(x)


def relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y - ref).norm() / ref.norm()).item()


def assert_converges(y: torch.Tensor, ref: torch.Tensor, tolerance: float = 0.1) -> None:
    """The mean output after all T steps is within ``tolerance`` of ref and closer than after 4."""
    assert relative_error(y[-1], ref) < tolerance
    assert relative_error(y[-1], ref) < relative_error(y[3], ref)


#: the paper default, burst neurons with MSE thresholds, SIT: what each model family is checked with
CONFIGURATIONS = [{}, dict(neuron="burst", threshold="mse"), dict(method="sit")]


def assert_converts(
    model, calibration, x, options: dict, direct: str | tuple, products: int, tolerance=0.15, burst=0.01
):
    """``model`` converted with ``options``: its direct-input layer at path ``direct`` (or layers
    at a tuple of paths), ``products`` products of two spiking operands, nothing analog, its
    analog form (:func:`transpike.trace.analog_network`) the ANN to 1e-5; after 32
    steps within ``tolerance`` of the ANN and closer than after 4 (within ``burst`` with burst
    neurons). Returns the network."""
    ref = ann_output(model, x)
    snn = transpike.convert(model, calibration, **options)
    report = snn.report()
    direct = [direct] if isinstance(direct, str) else list(direct)
    assert [r.path for r in report.by_role("direct-input")] == direct
    assert report.counts().get("mt×mt+product-ec", 0) == products and not report.analog
    with torch.no_grad():  # what transpike.trace compares with: the ANN, module for module
        assert relative_error(analog_network(snn.network)(x), ref) < 1e-5
    y = snn.simulate(x, 32)
    assert_converges(y, ref, tolerance)
    if options.get("neuron") == "burst":
        assert relative_error(y[-1], ref) < burst
    return snn


def emitters(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of a converted network that can emit rates."""
    kinds = (SpikingLayer, ExpectationCompensation, SpikingProduct)
    return [m for m in network.modules() if isinstance(m, kinds)]


def assert_twin_matches(model, x: torch.Tensor, original: type | tuple, twin: type, count: int) -> None:
    """The prepared copy of ``model`` holds ``count`` explicit ``twin`` modules and computes what
    ``model`` does, to 1e-6 relative, whether the ``original`` modules (of a type or of types) run
    fused attention or not."""
    prepared = prepare(model, ConversionOptions())
    assert sum(isinstance(m, twin) for m in prepared.modules()) == count
    with torch.no_grad():
        for fused in (True, False):
            for module in model.modules():
                if isinstance(module, original):
                    module.fused_attn = fused
            assert relative_error(prepared(x), model(x)) < 1e-6


def assert_prepared_matches_in_float64(model, x: torch.Tensor) -> torch.nn.Module:
    """``model`` and its prepared copy, both in float64, agree to 1e-12 relative on x (in float32
    the twins' reordered operations round differently, up to about 1e-6); returns the copy."""
    model = model.double()
    prepared = prepare(model, ConversionOptions())
    with torch.no_grad():
        assert relative_error(prepared(x.double()), model(x.double())) < 1e-12
    return prepared


def assert_blocks(model, calibration, x, analog: dict[int, list[str]], tolerance: float = 0.01) -> None:
    """For each k, ``blocks=k`` (burst neurons, MSE thresholds) leaves exactly the paths
    ``analog[k]`` analog and, after 16 steps, is within ``tolerance`` of the ANN."""
    ref = ann_output(model, x)
    for k, paths in analog.items():
        snn = transpike.convert(model, calibration, blocks=k, neuron="burst", threshold="mse")
        assert [row.path for row in snn.report().analog] == paths
        assert relative_error(snn.simulate(x, 16)[-1], ref) < tolerance


def assert_round_trip(snn, build, x: torch.Tensor, path, by_spec: bool = False) -> None:
    """``snn`` keeps the ANN's keys; saved and loaded (the ANN rebuilt from the file's model spec,
    or by ``build``) it gives the same outputs bit for bit, and ``rebuild_ann`` gives the ANN."""
    model = build()
    assert set(snn.ann_state_dict()) == set(model.state_dict())
    loaded = transpike.load(transpike.save(snn, path), model=None if by_spec else build())
    assert torch.equal(loaded.simulate(x, 4), snn.simulate(x, 4))
    with torch.no_grad():
        assert torch.equal(rebuild_ann(loaded, build())(x), model(x))


def assert_blocks_and_round_trip(
    build, inputs, analog: dict[int, list[str]], path, spec=None, tolerance=0.01
):
    """``blocks=k`` leaves the paths ``analog[k]`` analog (:func:`assert_blocks`), and the model
    converted by SIT and saved at ``path`` round-trips (:func:`assert_round_trip`), its ANN rebuilt
    from the model ``spec`` when given, else by ``build``."""
    calibration, x = inputs
    assert_blocks(build(), calibration, x, analog, tolerance)
    snn = transpike.convert(build(), calibration, method="sit", model_spec=spec)
    assert_round_trip(snn, build, x, path, by_spec=spec is not None)


def assert_rates_up_to(model, calibration, x: torch.Tensor, outputs: tuple[str, ...] = ("head",)) -> None:
    """``model`` converted in float64: every module that can emit a rate does, but the output
    layers at the paths ``outputs``, which emit the increments the simulation averages; and
    linked = unlinked."""
    linked = transpike.convert(model.double(), calibration.double())
    ends = [linked.network.get_submodule(path) for path in outputs]
    assert all(m.emits_rate for m in emitters(linked.network) if m not in ends)
    assert not any(m.emits_rate for m in ends)
    assert_links_keep_outputs(linked, x.double())


def assert_links_keep_outputs(linked, x: torch.Tensor, steps: int = 6):
    """A converted network (float64) whose modules pass rates along their links gives the outputs
    of its copy with every link undone (increments everywhere); returns that copy."""
    plain = copy.deepcopy(linked)
    link_rates(plain.network, enabled=False)
    assert torch.allclose(linked.simulate(x, steps), plain.simulate(x, steps), rtol=1e-9, atol=1e-9)
    return plain


def random_images(size: int, counts: tuple[int, int] = (32, 6), seed: int = 5) -> tuple[torch.Tensor, ...]:
    """(calibration batch, evaluation batch) of random-normal images of size × size pixels."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(count, 3, size, size, generator=gen) for count in counts)


def draw(model: torch.nn.Module, suffixes: str | tuple[str, ...], std: float) -> torch.nn.Module:
    """The parameters whose names end in ``suffixes`` drawn from N(0, std²), in the model's order:
    position biases timm starts at or near zero, which would hide what the twins do with them."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(suffixes):
                parameter.normal_(0, std)
    return model


def spread(model: torch.nn.Module, drawn: tuple[str, ...], scaled=("qkv.weight", ".q.weight", ".k.weight")):
    """Make a small random-init model's attention and branches matter: the weights whose names end
    in ``scaled`` ×3 (scores spread over the keys), those ending in ``drawn`` drawn with std 0.3
    (branch outputs as large as the residual stream)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(scaled):
                parameter.mul_(3)
    return draw(model, drawn, 0.3)


def redrawn(model: torch.nn.Module, logits: bool) -> torch.nn.Module:
    """``model`` (in evaluation) with its convolutions and Linears drawn with std 1.5/√fan-in and
    its BatchNorms scaling by 1 (transformers draws both with std 0.02 in MobileViT, the first in
    SwiftFormer, under which the signal of a random network vanishes within a few layers), in its
    logits form unless ``logits`` is False."""
    with torch.no_grad():
        for module in model.eval().modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.weight.normal_(0, 1.5 / math.sqrt(module.weight[0].numel()))
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.fill_(1)
    from transpike.rules.hf_vit import logits_model  # imports transformers: only where needed

    return logits_model(model) if logits else model


def assert_logits_form_matches(model, x: torch.Tensor, reference: torch.Tensor, tolerance=1e-12):
    """A transformers classifier ``model``, prepared from itself, gives ``reference`` (its logits for
    ``x``) within ``tolerance`` (relative), and its logits form gives them exactly. Returns the
    prepared model, whose twins the caller counts."""
    from transpike.rules.hf_vit import logits_model  # imports transformers: only where needed

    prepared = prepare(model, ConversionOptions())
    with torch.no_grad():
        assert relative_error(prepared(x), reference) < tolerance
        assert torch.equal(logits_model(model)(x), reference)
    return prepared


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    """(calibration batch, evaluation batch) of random images for TINY models."""
    return random_images(16, seed=123)


SIMULATE = SpikingModel.simulate  # what interrupt_after wraps, however often it is called


def interrupt_after(monkeypatch, calls: int) -> list[int]:
    """Make every SpikingModel.simulate after the first ``calls`` raise KeyboardInterrupt (Ctrl-C
    mid-batch); returns the list of batch sizes simulated."""
    seen = []

    def counted(self, x, time_steps):
        if len(seen) == calls:
            raise KeyboardInterrupt
        seen.append(len(x))
        return SIMULATE(self, x, time_steps)

    monkeypatch.setattr(SpikingModel, "simulate", counted)
    return seen
