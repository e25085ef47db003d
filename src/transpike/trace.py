"""Where a spiking network departs from its ANN: a trace of one batch, module by module, step by step.

Every converted module stands for a value the ANN computes: a spiking layer for its layer's output,
an EC module for F's, a product EC for the product's, an MT neuron for its own input (which its
spikes stand in for). After t steps the module's output rate r(t) should be that value a: its
output itself where it hands on rates, else the running mean of its increments (ECMT eq. 15 makes
it F of the input rate). The trace gives, for every converted module and every t ≤ T,

    error(t) = ||r(t) - a|| / ||a||        and        input error(t) = ||r_in(t) - a_in|| / ||a_in||,

the same for what the module reads (a product: both operands together). The values a come from
:func:`analog_network`, a copy of the converted network with every spiking module replaced by the
ANN module it stands for, at the same path: no template model is needed, and it computes what the
ANN computes (the tests check it on every family's test model). With synaptic weights rounded to b
bits (``weight_bits``) that ANN holds the rounded weights: the trace is the conversion's error, and
:func:`rounding` gives what the rounding alone costs against the float ANN.

Reading it: an MT neuron whose error exceeds its input error adds the error of its thresholds (a
rate quantized to its levels), more so where it saturates (``saturation``: its share of outputs
at its top level, which cannot carry what its membrane holds); an EC module or a layer whose error
exceeds its input error amplifies what reaches it. Error that grows from module to module while the neurons
add little means the ANN itself amplifies small changes of its activations, which no conversion of
it can avoid (BENCHMARKS.md §1 finds this in random-init ResNets with measured BatchNorm statistics).
Memory: about three times the ANN's activations of the batch (the values a and a_in, and running
means where a module passes increments).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor, nn

from .compensation import ExpectationCompensation, SpikingProduct
from .convert import ConversionOptions, prepare
from .model import SpikingModel
from .neurons import MTNeuron, top_level
from .precision import quantized_layer
from .rules import rule_for
from .sit import SpikingSoftmax
from .sites import Observed, Product
from .synapses import SpikingLayer

#: converted module types and what each row calls them
KINDS = (
    (MTNeuron, "neuron"),
    (SpikingLayer, "layer"),
    (SpikingProduct, "product"),
    (ExpectationCompensation, "ec"),
)
#: the input of its owner that a neuron reads, by the neuron's name
OPERAND = {"neuron": 0, "neuron_a": 0, "neuron_b": 1}


def analog_network(network: nn.Module) -> nn.Module:
    """A copy of a converted network that computes the ANN: every spiking layer its layer, every
    product EC the product of its operands (:class:`~transpike.sites.Product`), every EC module its
    F (a spiking softmax the softmax it stands for), each at the path of the module it replaces."""
    network = copy.deepcopy(network)
    for module in list(network.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, SpikingLayer):
                setattr(module, name, child.layer)
            elif isinstance(child, SpikingProduct):
                setattr(module, name, Product(child.op, child.scale))
            elif isinstance(child, ExpectationCompensation):
                f = child.f
                setattr(module, name, nn.Softmax(f.dim) if isinstance(f, SpikingSoftmax) else f)
    return network


def relative_error(value: Tensor, reference: Tensor) -> float:
    """||value - reference|| / ||reference|| (L2 over all entries, in float64); NaN where the
    reference is all zeros."""
    norm = torch.linalg.vector_norm(reference, dtype=torch.float64)
    if norm == 0:
        return math.nan
    return (torch.linalg.vector_norm(value - reference, dtype=torch.float64) / norm).item()


class _Rate:
    """The rate of a tensor a module reads or emits, from what passes each step: the tensor itself
    if it is a rate, else the running mean of its increments."""

    def __init__(self, is_rate: bool) -> None:
        self.is_rate = is_rate
        self.mean: Tensor | None = None

    def update(self, value: Tensor, t: int) -> Tensor:
        if self.is_rate:
            return value  # read at once: the module may overwrite it next step
        self.mean = value.clone() if t == 1 else self.mean.lerp_(value, 1.0 / t)
        return self.mean


@dataclass(frozen=True)
class TraceRow:
    """One converted module: its relative errors after t = 1..T steps (index t - 1).

    Attributes:
        path: the module's path in the network.
        kind: "neuron", "layer", "product", "ec" (a nonlinear module), "analog" (an EC module left
            analog: ``blocks=k`` or no rule) or "output" (the network's output).
        type: the class of what it stands for (the layer's, F's, the product's op; a neuron: that
            of the module it feeds).
        scale: the RMS of the ANN's value.
        error: the error of its output rate.
        input_error: the error of its input rate (None for the output row).
        saturation: a neuron's share of outputs at its top level (θ·2^(n-1); burst θ·(2^n - 1))
            in step t, not cumulative: a neuron that cannot emit what its membrane holds (None
            for other modules).
    """

    path: str
    kind: str
    type: str
    scale: float
    error: list[float]
    input_error: list[float] | None
    saturation: list[float] | None = None

    def added(self, t: int) -> float:
        """error - input error after t steps: what the module adds (a neuron: its quantization; an
        EC module or layer: its amplification of the input's error)."""
        return self.error[t - 1] - (self.input_error[t - 1] if self.input_error else 0.0)


def _steps(time_steps: int) -> list[int]:
    """The t shown in tables: powers of two up to T, and T."""
    shown = [2**k for k in range(time_steps.bit_length()) if 2**k <= time_steps]
    return shown + ([time_steps] if shown[-1] != time_steps else [])


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


@dataclass(frozen=True)
class Trace:
    """Errors of every converted module against the ANN, in the order the modules run, and of the
    network's output (the last row), with ``agreement``: per t, the percentage of the output's rows
    (a classifier's samples) whose top-1 is the ANN's. ``str(trace)`` is the whole table;
    :meth:`summary` the output's errors and the modules that add the most."""

    time_steps: int
    rows: list[TraceRow]
    agreement: list[float]

    @property
    def output(self) -> TraceRow:
        return self.rows[-1]

    def worst(self, count: int = 10, t: int | None = None) -> list[TraceRow]:
        """The ``count`` modules that add the most error after t steps (default T)."""
        t = t or self.time_steps
        found = [row for row in self.rows[:-1] if not math.isnan(row.added(t))]
        return sorted(found, key=lambda row: row.added(t), reverse=True)[:count]

    def saturated(self, count: int = 5) -> list[TraceRow]:
        """The ``count`` neurons with the largest share of outputs at their top level in any step
        (those with some)."""
        found = [row for row in self.rows if row.saturation and max(row.saturation) > 0]
        return sorted(found, key=lambda row: max(row.saturation), reverse=True)[:count]

    def to_dict(self) -> dict:
        """Plain data for JSON (NaN as None)."""

        def clean(values: list[float] | None) -> list[float | None] | None:
            return None if values is None else [None if math.isnan(v) else v for v in values]

        rows = [
            {**asdict(r), "error": clean(r.error), "input_error": clean(r.input_error)} for r in self.rows
        ]
        return dict(time_steps=self.time_steps, rows=rows, agreement=self.agreement)

    def _table(self, rows: list[TraceRow], t: int | None = None) -> str:
        steps = _steps(self.time_steps)
        head = f"{'module':<48} {'kind':<8} {'type':<22} " + " ".join(f"{f't={s}':>8}" for s in steps)
        lines = [head + (f"   input → error at t={t}" if t else "")]
        for row in rows:
            line = f"{row.path:<48} {row.kind:<8} {row.type[:22]:<22} " + " ".join(
                f"{_number(row.error[s - 1]):>8}" for s in steps
            )
            if t and row.input_error:
                line += f"   {_number(row.input_error[t - 1])} → {_number(row.error[t - 1])}"
            lines.append(line)
        return "\n".join(lines)

    def summary(self, count: int = 10) -> str:
        """The output's error by t, the ``count`` modules that add the most at t = T, and the
        neurons that saturate most."""
        t = self.time_steps
        same = "   ".join(f"t={s}: {self.agreement[s - 1]:.1f} %" for s in _steps(t))
        text = (
            f"relative error against the ANN after t steps\n{self._table([self.output])}\n"
            f"same top-1 as the ANN: {same}\n\n"
            f"the {count} modules that add the most error at t={t}\n{self._table(self.worst(count), t)}"
        )
        saturated = self.saturated()
        if saturated:
            text += "\n\nneurons at their top level (share of outputs, largest in one step; at step t)"
            for row in saturated:
                share = max(row.saturation)
                text += f"\n{row.path:<48} {share:.3f} at t={row.saturation.index(share) + 1}"
        return text

    def __str__(self) -> str:
        return self._table(self.rows, self.time_steps)


class _Recorder:
    """Hooks that keep the ANN's values (inputs and output) of the analog network's modules."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[list[Tensor], Tensor]] = {}

    def hook(self, path: str):
        def keep(module: nn.Module, args: tuple, output: Tensor) -> None:
            # copies: a later module may change a tensor in place (an analog block's ReLU)
            self.values[path] = ([a.clone() for a in args if isinstance(a, Tensor)], output.clone())

        return keep


class _Tracker:
    """The errors of one converted module, appended step by step by a forward hook on it.

    A neuron's input is the current it reads, an EC module's the tensor F reads (``expected_input``
    its ANN value). A layer or a product computes on its neurons' spikes: their errors taken
    together are its input error.
    """

    def __init__(
        self,
        path: str,
        expected_input: Tensor | None,
        expected: Tensor,
        neurons: list[_Tracker],
        order: list[str],
    ) -> None:
        self.path, self.expected_input, self.expected, self.neurons = path, expected_input, expected, neurons
        self.order = order  # where each tracker lists its path when its module first runs
        self.norm = torch.linalg.vector_norm(expected, dtype=torch.float64).item()
        self.error: list[float] = []
        self.input_error: list[float] = []
        self.input_rate: _Rate | None = None
        self.output_rate: _Rate | None = None
        self.saturation: list[float] | None = None

    def __call__(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        t = len(self.error) + 1
        if t == 1:
            self.order.append(self.path)
            self.input_rate = _Rate(getattr(module, "takes_rate", False))
            self.output_rate = _Rate(getattr(module, "emits_rate", False))
            self.saturation = [] if isinstance(module, MTNeuron) else None
        if tuple(output.shape) != tuple(self.expected.shape):
            raise ValueError(
                f"{self.path} ({type(module).__name__}): output of shape {tuple(output.shape)} where the "
                f"ANN's is {tuple(self.expected.shape)}; the trace cannot compare them"
            )
        if self.neurons:  # ||(e_a·|a|, e_b·|b|)|| / ||(|a|, |b|)||: the operands as one tensor
            squares = sum((n.error[-1] * n.norm) ** 2 for n in self.neurons if n.norm)
            norms = sum(n.norm**2 for n in self.neurons)
            self.input_error.append(math.sqrt(squares / norms) if norms else math.nan)
        elif self.expected_input is not None and args:
            self.input_error.append(relative_error(self.input_rate.update(args[0], t), self.expected_input))
        else:  # F given its input by keyword: not seen by the hook
            self.input_error.append(math.nan)
        self.error.append(relative_error(self.output_rate.update(output, t), self.expected))
        if self.saturation is not None:
            self.saturation.append(_at_top(module, output))


def _at_top(neuron: MTNeuron, spikes: Tensor) -> float:
    """The share of a neuron's outputs at its top level, on either side."""
    theta = torch.where(spikes > 0, neuron.theta_pos, neuron.theta_neg)
    # outputs are θ·c, rounded
    top = theta * (top_level(neuron.levels, neuron.neuron, neuron.per_octave) * (1 - 1e-6))
    return (spikes.abs() >= top).double().mean().item()


@torch.inference_mode()
def trace(snn: SpikingModel, x: Tensor, time_steps: int) -> Trace:
    """Simulate ``time_steps`` steps on the batch x and compare every converted module's rates with
    the ANN's values at every step (see the module docstring).

    Args:
        snn: the converted network (its settings kept; a CUDA-graph replay cannot run the hooks).
        x: one batch of inputs.
        time_steps: T.

    Returns:
        The :class:`Trace`: one row per converted module, in the order they run, and the output's.
    """
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
        raise ValueError(f"time_steps must be an integer >= 1, got {time_steps!r}")
    x = snn._input(x)
    snn.reset()
    converted = {
        path: kind
        for path, module in snn.network.named_modules()
        for cls, kind in KINDS
        if isinstance(module, cls)
    }
    analog = analog_network(snn.network)
    recorder, hooks = _Recorder(), []
    for path, kind in converted.items():
        if kind != "neuron":
            hooks.append(analog.get_submodule(path).register_forward_hook(recorder.hook(path)))
    try:
        expected = analog(x)
    finally:
        for hook in hooks:
            hook.remove()
    types = {path: _stands_for(analog.get_submodule(path)) for path in recorder.values}
    del analog

    trackers: dict[str, _Tracker] = {}
    order: list[str] = []  # the order the modules first run in
    for path, kind in converted.items():  # neurons first: their owners read their errors
        owner, _, name = path.rpartition(".")
        if kind == "neuron" and owner in recorder.values:  # it stands for its input, the owner's operand
            value = recorder.values[owner][0][OPERAND[name]]
            trackers[path] = _Tracker(path, value, value, [], order)
            types[path] = types[owner]
    for path in converted:
        if path in recorder.values:  # else never run: a branch the forward skips
            inputs, output = recorder.values[path]
            neurons = [trackers[f"{path}.{n}"] for n in OPERAND if f"{path}.{n}" in trackers]
            expected_input = inputs[0] if inputs and not neurons else None
            trackers[path] = _Tracker(path, expected_input, output, neurons, order)
    del recorder
    hooks = [snn.network.get_submodule(p).register_forward_hook(tracker) for p, tracker in trackers.items()]
    try:
        y = snn.simulate(x, time_steps)
    finally:
        for hook in hooks:
            hook.remove()
    rows = []
    for path in order:
        module, tracker = snn.network.get_submodule(path), trackers[path]
        kind = "analog" if isinstance(module, ExpectationCompensation) and module.analog else converted[path]
        scale = _rms(tracker.expected)
        error, input_error = tracker.error, tracker.input_error
        rows.append(TraceRow(path, kind, types[path], scale, error, input_error, tracker.saturation))
    expected = expected.double()
    output_error = [relative_error(y[t], expected) for t in range(time_steps)]
    rows.append(
        TraceRow("<output>", "output", type(snn.network).__name__, _rms(expected), output_error, None)
    )
    same = (y.argmax(-1) == expected.argmax(-1)).flatten(1).double().mean(1)  # [T]: rows deciding as the ANN
    return Trace(time_steps, rows, (100.0 * same).tolist())


def _rms(value: Tensor) -> float:
    return (torch.linalg.vector_norm(value, dtype=torch.float64) / math.sqrt(max(value.numel(), 1))).item()


@torch.inference_mode()
def sensitivity(snn: SpikingModel, x: Tensor, noise: float = 0.01, seed: int = 0) -> float:
    """The ANN's own output error when every MT site's input gets Gaussian noise of relative size
    ``noise`` (||n|| = noise·||input||, drawn from ``seed``): what the ANN makes of errors like the
    neurons'. Far above ``noise``, the ANN amplifies small changes of its activations, and its SNN
    needs neurons that add much less (more steps, finer thresholds) to track it.

    Args:
        snn: the converted network (its sites: every spiking layer's input, every product's operands).
        x: one batch of inputs.
        noise: the relative size of the noise at each site.
        seed: the noise's seed.
    """
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise > 0:
        raise ValueError(f"noise must be a number > 0, got {noise!r}")
    x = snn._input(x)
    sites = [p for p, m in snn.network.named_modules() if isinstance(m, (SpikingLayer, SpikingProduct))]
    analog = analog_network(snn.network)
    expected = analog(x)
    generator = torch.Generator(x.device).manual_seed(seed)

    def perturb(module: nn.Module, args: tuple) -> tuple:
        def noisy(value: Tensor) -> Tensor:
            n = torch.randn(value.shape, generator=generator, device=value.device, dtype=value.dtype)
            return value + n * (noise * torch.linalg.vector_norm(value) / torch.linalg.vector_norm(n))

        return tuple(noisy(a) if isinstance(a, Tensor) else a for a in args)

    for path in sites:
        analog.get_submodule(path).register_forward_pre_hook(perturb)
    return relative_error(analog(x), expected)


@torch.inference_mode()
def rounding(snn: SpikingModel, ann: nn.Module, x: Tensor) -> dict | None:
    """What rounding the synaptic weights (``weight_bits``) alone does to the ANN: the output's
    relative error of the ANN holding the rounded weights (:func:`analog_network`, the reference of
    :func:`trace`) against the float ``ann``, the share (percent) of outputs whose top-1 is the
    float ANN's, and ``layers``: for each rounded synaptic layer, the output's error when it alone
    is rounded (the rest float), largest first: where fewer bits cost the most, and where more would
    pay. None where the synapses are float.

    Args:
        snn: the converted network.
        ann: the float ANN (:func:`transpike.io.rebuild_ann`), on the network's device.
        x: one batch of inputs.
    """
    options = ConversionOptions(**snn.options)
    if options.weight_bits is None:
        return None
    x = snn._input(x)
    rounded, expected = analog_network(snn.network)(x), ann(x)
    same = (rounded.argmax(-1) == expected.argmax(-1)).double().mean().item()
    # the float ANN, its synapses observed
    network = prepare(ann, replace(options, weight_bits=None, weight_bits_at=None))
    bits = {p: options.bits_at(p) for p, m in snn.network.named_modules() if isinstance(m, SpikingLayer)}
    sites = [(p, m) for p, m in network.named_modules() if isinstance(m, Observed) and bits.get(p)]
    layers, chosen = [], (options.weight_granularity, options.weight_scale)
    for path, site in sites:
        kept = site.layer
        site.layer = quantized_layer(copy.deepcopy(kept), rule_for(kept), bits[path], *chosen)[0]
        layers.append(dict(path=path, output_error=relative_error(network(x), expected)))
        site.layer = kept
    return dict(
        weight_bits=options.weight_bits,
        output_error=relative_error(rounded, expected),
        agreement=100.0 * same,
        layers=sorted(layers, key=lambda row: row["output_error"], reverse=True),
    )


def _stands_for(module: nn.Module) -> str:
    return f"{module.op} product" if isinstance(module, Product) else type(module).__name__
