"""Bad input gets a clear error that names what was wrong, and the user's model is never touched."""

import copy

import pytest
import torch
from conftest import ann_output, relative_error, tiny_vit
from torch import nn

import transpike
from transpike import ConversionError, ConversionOptions
from transpike.rules import Role, register
from transpike.sites import Unconverted


def snapshot(model):
    return [type(m) for m in model.modules()], copy.deepcopy(model.state_dict())


def unchanged(model, before):
    types, state = before
    return [type(m) for m in model.modules()] == types and all(
        torch.equal(state[k], v) for k, v in model.state_dict().items()
    )


class Swish(nn.Module):
    """A custom activation module the converter has no rule for."""

    def forward(self, x):
        return x * torch.sigmoid(x)


class FunctionalBlock(nn.Module):
    """A container whose forward calls F.relu itself."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(nn.functional.relu(self.fc1(x)))


class RotatingBlock(nn.Module):
    """A container that adds cos of a table computed from a buffer (like a rotary embedding's), or,
    with ``on_input``, cos of its input (nonlinear)."""

    def __init__(self, on_input: bool = False):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.register_buffer("angles", torch.linspace(0.0, 1.0, 6))
        self.on_input = on_input

    def forward(self, x):
        table = torch.outer(torch.arange(1.0, 3.0), self.angles).sum(0)  # computed from constants
        return self.fc(x + torch.cos(x if self.on_input else table))


for cls in (FunctionalBlock, RotatingBlock):
    register(cls, Role.CONTAINER)  # the user claims its forward is linear; the audit checks


@pytest.mark.parametrize(
    "model, path, kind",
    [
        (nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4)), "1", "LSTM"),
        (nn.Sequential(nn.Linear(4, 4), Swish()), "1", "Swish"),
        (nn.Sequential(nn.Linear(6, 6), FunctionalBlock()), "1", "FunctionalBlock"),
    ],
)
def test_unsupported_modules_are_named(model, path, kind):
    before = snapshot(model)
    x = torch.randn(8, 4 if kind != "FunctionalBlock" else 6)
    with pytest.raises(ConversionError) as error:
        transpike.convert(model, x)
    assert error.value.path == path and kind in error.value.module_type
    assert f"{path} (" in str(error.value)
    assert unchanged(model, before)


class Unknown(nn.Module):
    """A model of the user's own whose parts are partly unknown to the converter."""

    def __init__(self):
        super().__init__()
        self.fc, self.act, self.inner = nn.Linear(4, 4), Swish(), nn.Sequential(Swish(), nn.LSTM(4, 4))

    def forward(self, x):
        return self.inner[0](self.act(self.fc(x)))


def test_a_module_without_a_rule_names_its_parts_without_one():
    with pytest.raises(ConversionError) as error:
        transpike.convert(Unknown(), torch.randn(8, 4))
    assert error.value.path == "<root>" and error.value.module_type.endswith("test_bad_input.Unknown")
    # each type once, sorted; Linear and Sequential have rules
    assert str(error.value).startswith(
        "<root> (test_bad_input.Unknown): no conversion rule for this module type "
        "(nor do its parts: test_bad_input.Swish, torch.nn.modules.rnn.LSTM); register a rule"
    )
    with pytest.raises(ConversionError, match=r"^1 \(.*Swish\): no conversion rule for this module type; "):
        transpike.convert(nn.Sequential(nn.Linear(4, 4), Swish()), torch.randn(8, 4))


def test_functional_call_is_reported_with_its_op():
    model = nn.Sequential(nn.Linear(6, 6), FunctionalBlock()).eval()
    with pytest.raises(ConversionError, match=r"aten\.relu"):
        transpike.convert(model, torch.randn(8, 6))


def test_nonlinear_work_on_constants_is_not_reported():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), RotatingBlock()).eval()
    x = torch.randn(5, 6)
    y = transpike.convert(model, torch.randn(64, 6)).simulate(x, 64)
    assert relative_error(y[-1], ann_output(model, x)) < 0.05
    nonlinear = nn.Sequential(nn.Linear(6, 6), RotatingBlock(on_input=True)).eval()
    with pytest.raises(ConversionError, match=r"aten\.cos"):
        transpike.convert(nonlinear, torch.randn(8, 6))


def test_functional_call_left_analog_when_not_strict():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), FunctionalBlock()).eval()
    snn = transpike.convert(model, torch.randn(64, 6), strict=False)
    analog = snn.report().analog
    assert [(r.path, r.module_type) for r in analog] == [("1", "FunctionalBlock")]
    assert "functional call" in analog[0].detail
    x = torch.randn(5, 6)
    ref = ann_output(model, x)
    assert relative_error(snn.simulate(x, 64)[-1], ref) < 0.05


class TwoInputs(nn.Module):
    """A part without a rule that reads two tensors and a constant."""

    def forward(self, x, y, scale: float):
        return torch.tanh(x + scale * y)


class Outer(nn.Module):
    def __init__(self, other_is_a_tensor: bool):
        super().__init__()
        self.fc, self.part, self.other_is_a_tensor = nn.Linear(4, 4), TwoInputs(), other_is_a_tensor

    def forward(self, x):
        x = self.fc(x)
        return self.part(x, x if self.other_is_a_tensor else 0.0, 0.5)


register(Outer, Role.CONTAINER)


@pytest.mark.parametrize("other_is_a_tensor", [False, True])
def test_a_part_left_analog_reads_the_rate_of_every_tensor_it_takes(other_is_a_tensor):
    """Constants go to it unchanged; a second tensor input is averaged like the first (an EC
    module keeps each input's rate)."""
    x = torch.randn(8, 4)
    torch.manual_seed(0)
    model = Outer(other_is_a_tensor).eval()
    snn = transpike.convert(model, torch.randn(64, 4), strict=False)
    assert [r.path for r in snn.report().analog] == ["part"]
    errors = [relative_error(snn.simulate(x, t)[-1], ann_output(model, x)) for t in (4, 64)]
    assert errors[1] < 0.05 and errors[1] < errors[0] / 4
    ec = snn.network.part
    assert len(ec.others) == 2 and (ec.others[0] is not None) == other_is_a_tensor and ec.others[1] is None
    held, total = sum(t.numel() * t.element_size() for t in ec.others if t is not None), snn.state_bytes()
    ec.others = []
    assert total - snn.state_bytes() == held  # the second input's rate counts as state
    with pytest.raises(TypeError, match=r"left analog \(TwoInputs\) must take a tensor first, got float"):
        Unconverted(TwoInputs(), "no rule")(0.5, x, 1.0)


class Reusing(nn.Module):
    """A container that runs one of its stateful modules twice: ``shared`` is "act" (a GELU),
    "fc" (a weight layer) or "part" (a module left analog)."""

    def __init__(self, shared: str):
        super().__init__()
        self.fc, self.act, self.part, self.shared = nn.Linear(4, 4), nn.GELU(), Swish(), shared

    def forward(self, x):
        use = getattr(self, self.shared)
        return use(self.fc(use(x) if self.shared != "fc" else x))


register(Reusing, Role.CONTAINER)


@pytest.mark.parametrize("shared, kind", [("act", "GELU"), ("fc", "Linear"), ("part", "Swish")])
def test_a_stateful_module_called_twice_is_refused_by_path(shared, kind):
    """Converted, a module keeps state per call site (a membrane, running means); two calls in one
    step would share it and go silently wrong, whether the module converts or stays analog."""
    with pytest.raises(ConversionError, match=rf"^{shared} \(.*\.{kind}\): called 2 times in one forward"):
        transpike.convert(Reusing(shared), torch.randn(16, 4), strict=False)


def test_timm_vits_pass_the_audit(images):
    """Strict conversion (the default) raises on any functional call the audit finds."""
    models = [tiny_vit(name, reg_tokens=0 if "deit" in name else 2)
              for name in ("vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224")]  # fmt: skip
    # rotary embeddings built at run time for the input's size
    models.append(tiny_vit("eva02_tiny_patch14_224", dynamic_img_size=True))
    for model in models:
        assert transpike.convert(model, images[0]).report().analog == []


@pytest.fixture
def snn(images):
    return transpike.convert(tiny_vit(), images[0])


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.randn(2, 3, 20, 20), r"input x of shape \(2, 3, 20, 20\)"),
        (torch.randn(2, 16, 16), r"input x of shape \(2, 16, 16\)"),
        (torch.ones(2, 3, 16, 16, dtype=torch.int64), "dtype torch.int64"),
        (torch.full((2, 3, 16, 16), float("nan")), "NaN or Inf"),
        (torch.full((2, 3, 16, 16), float("inf")), "NaN or Inf"),
        (torch.randn(2, 3, 16, 16).index_fill_(3, torch.tensor([7]), float("nan")), "NaN or Inf"),
        (torch.randn(2, 3, 16, 16).index_fill_(2, torch.tensor([0]), -float("inf")), "NaN or Inf"),
        ([[1.0]], "torch.Tensor, got list"),
    ],
)
def test_bad_evaluation_input(snn, x, message):
    with pytest.raises(ValueError, match=message):
        snn.simulate(x, 2)


def test_other_float_dtypes_are_accepted(snn, images):
    x = images[1]
    assert torch.allclose(snn.simulate(x.double(), 2), snn.simulate(x, 2))


@pytest.mark.parametrize("time_steps", [0, -3, 2.5, True, "8", None])
def test_bad_time_steps(snn, images, time_steps):
    with pytest.raises(ValueError, match=f"time_steps must be an integer >= 1, got {time_steps!r}"):
        snn.simulate(images[1], time_steps)


@pytest.mark.parametrize(
    "calibration, message",
    [
        ([], "calibration is empty"),
        (torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 3, 16, 16))), "empty"),
        ([torch.randn(4, 3, 16, 16), torch.randn(4, 3, 8, 8)], r"batch 1: sample shape \(3, 8, 8\) differs"),
        ([torch.randn(4, 3, 16, 16), torch.full((4, 3, 16, 16), float("nan"))], "batch 1: contains NaN"),
        (
            [torch.randn(4, 3, 24, 24)],
            r"calibration batch 0 of shape \(4, 3, 24, 24\): the model rejected it",
        ),
        ([torch.ones(4, 3, 16, 16, dtype=torch.uint8)], "batch 0: expected a floating-point tensor"),
        (["not a tensor"], "batch 0: expected a floating-point tensor, got str"),
    ],
)
def test_bad_calibration(calibration, message):
    model = tiny_vit()
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        transpike.convert(model, calibration)
    assert unchanged(model, before)


@pytest.mark.parametrize(
    "option, value",
    [("percentile", 0.0), ("percentile", -5.0), ("percentile", 100.5), ("percentile", "99"), ("levels", 0),
     ("levels", -1), ("levels", 1.5), ("horizon", 0), ("sit_steps", 0), ("sit_norm_spikes", 0),
     ("sit_norm_spikes", 2.5), ("blocks", -1), ("levels_per_octave", 0), ("levels_per_octave", 1.5),
     ("levels", 31)],
)  # fmt: skip
def test_bad_options_name_argument_and_value(option, value, images):
    with pytest.raises(ValueError, match=rf"{option} must be .*got {value!r}"):
        transpike.convert(tiny_vit(), images[0], **{option: value})


def test_levels_per_octave_bound_the_levels_and_refuse_burst_neurons(images):
    # s levels per octave allow 29·s + 1 levels (the top level at most θ·2^29), as s = 1 allows 30
    assert ConversionOptions(levels=59, levels_per_octave=2).levels == 59
    with pytest.raises(ValueError, match=r"levels must be an integer in \[1, 59\], got 60"):
        ConversionOptions(levels=60, levels_per_octave=2)
    with pytest.raises(ValueError, match=r"levels_per_octave must be 1 for the burst neuron .*got 4"):
        transpike.convert(tiny_vit(), images[0], neuron="burst", levels_per_octave=4)


def test_levels_per_octave_with_percentile_thresholds_warn(images):
    with pytest.warns(UserWarning, match="levels_per_octave > 1 pays with threshold='mse'"):
        transpike.convert(tiny_vit(), images[0], levels_per_octave=2)


def test_sit_steps_without_a_fit_are_refused_before_calibration(images):
    with pytest.raises(ValueError, match=r"sit_steps must be one of the fitted K \[4, 5, .*32\], got 17"):
        transpike.convert(tiny_vit(), images[0], method="sit", sit_steps=17)


def test_unknown_option_is_named(images):
    with pytest.raises(ValueError, match=r"unknown conversion option.*'percentil'"):
        transpike.convert(tiny_vit(), images[0], percentil=99.0)


def test_low_percentiles_are_allowed(images):
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration, percentile=30.0)
    assert torch.isfinite(snn.simulate(x, 4)).all()
