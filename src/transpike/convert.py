"""prepare → calibrate → convert: from a trained ANN to a :class:`~transpike.model.SpikingModel`.

ECMT Algorithm 1. ``prepare`` copies the model and swaps, module by module (see
:mod:`transpike.rules`): opaque modules for explicit twins, weight layers for :class:`Observed`
layers, products get observers on both operands. ``calibrate`` runs the copy on calibration batches
so the observers build their histograms. ``to_spiking`` turns every observed site into MT neurons
with thresholds read from its histogram, every nonlinear module into EC(F) and every product into
the product EC; along chains of modules that can, rates are passed instead of increments
(:mod:`transpike.rates`).
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .audit import audit
from .compensation import ExpectationCompensation, SpikingProduct
from .errors import ConversionError, type_name
from .fingerprints import fingerprints
from .model import SpikingModel, device_dtype
from .neurons import NEURONS, ROUNDINGS, MTNeuron
from .observers import HistogramObserver
from .precision import SCALES, quantized_layer
from .rates import link_rates
from .rules import Role, rule_for
from .sit import MODES as SIT_MODES
from .sit import SpikingSoftmax, shipped_fits
from .sites import Observed, Product, Unconverted
from .synapses import SpikingLayer
from .thresholds import mse_thresholds, percentile_thresholds

METHODS = ("ecmt", "sit")
GRANULARITIES = ("tensor", "channel")
THRESHOLDS = ("percentile", "mse")


@dataclass(frozen=True)
class ConversionOptions:
    """Every choice that defines a converted network (saved with it).

    Attributes:
        method: "ecmt", or "sit": ECMT with every softmax computed by SIT-conversion's spiking
            softmax (SI-exp and SI-norm neurons) inside its EC module.
        levels: n, MT levels per sign; 1 gives a plain signed IF neuron. None (default): eight
            octaves, 7·s + 1 (ECMT's 8 with s = 1).
        levels_per_octave: s; the levels are θ·2^(k/s), k = 0..n-1 (1: ECMT's powers of two).
            One spike per step still, of a finer choice of sizes: at t = 1 an MT neuron's output
            is the input rounded to a level, so its largest relative error falls from 1/3 (s = 1,
            nearest rounding) to about 2^(1/s) - 1 halved. Not with the burst neuron.
        percentile: p; θ1 = P_p and θ2 = -P_{100-p} of each site's calibration values.
        granularity: "tensor" (one θ1, θ2 per site, the paper) or "channel".
        threshold: "percentile" (the paper) or "mse": per site, the θ that minimizes the expected
            rate error over the first ``horizon`` steps (see :func:`~transpike.thresholds.mse_thresholds`).
        horizon: time steps the "mse" search optimizes for.
        rounding: "greedy" (the paper) or "nearest" level choice.
        neuron: "mt" (one spike per step) or "burst" (several levels may fire in one step).
        compensation: False is the ablation without EC (F applied to each step's input).
        strict: False leaves modules without a rule analog instead of raising.
        sit_steps: K, SI-exp's internal steps (method "sit"), one of the shipped fits' (4..16, 20,
            24, 28, 32).
        sit_mode: "shift", "clip" or "sigmoid" (see :class:`~transpike.sit.SpikingSoftmax`).
        sit_norm_spikes: N, SI-norm's spike-train length: its output resolution 1/N and, in the
            energy accounting, about N accumulates per softmax row and step; None (default):
            about 256 × each softmax's row length (:func:`~transpike.sit.default_norm_spikes`).
        blocks: convert only the first k Transformer blocks (``model.blocks``, or Swin's blocks
            stage by stage); later blocks and everything after them stay analog, computed on rates
            (SIT-conversion's Tables 2-4), but for linear, stateless modules (dropout, pools),
            kept as they are.
        weight_bits: b, the bits of every synaptic weight (the weight layers fed by MT neurons),
            rounded before calibration to a symmetric grid of 2^b - 1 values (:mod:`transpike.precision`);
            None (default): float. The float weights are kept beside them, as the network's ANN.
        weight_granularity: "channel" (one scale per output channel, default) or "tensor" (one per
            layer) for ``weight_bits``.
        weight_scale: "max" (default: the largest weight on the grid's end, none clipped) or "mse"
            (the scale minimizing the rounding's squared error, clipping the largest weights;
            :func:`~transpike.precision.weight_scale`) for ``weight_bits``.
        weight_bits_at: with ``weight_bits``, {module path: b or None}: the synapses of the layers
            at or under a path keep b bits instead (None: float), the most specific path winning
            (:meth:`bits_at`); e.g. ``{"head": 8}`` keeps the classifier at 8 bits where the rest
            has 4 (``transpike trace`` lists the layers whose rounding costs the most).
    """

    method: str = "ecmt"
    levels: int | None = None
    levels_per_octave: int = 1
    percentile: float = 99.0
    granularity: str = "tensor"
    threshold: str = "percentile"
    horizon: int = 4
    rounding: str = "greedy"
    neuron: str = "mt"
    compensation: bool = True
    strict: bool = True
    sit_steps: int = 12
    sit_mode: str = "shift"
    sit_norm_spikes: int | None = None
    blocks: int | None = None
    weight_bits: int | None = None
    weight_granularity: str = "channel"
    weight_scale: str = "max"
    weight_bits_at: dict[str, int | None] | None = None

    def __post_init__(self) -> None:
        choices = {
            "method": METHODS,
            "granularity": GRANULARITIES,
            "threshold": THRESHOLDS,
            "rounding": ROUNDINGS,
            "neuron": NEURONS,
            "sit_mode": SIT_MODES,
            "weight_granularity": GRANULARITIES,
            "weight_scale": SCALES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        per_octave = self.levels_per_octave
        if isinstance(per_octave, bool) or not isinstance(per_octave, int) or per_octave < 1:
            raise ValueError(f"levels_per_octave must be an integer >= 1, got {per_octave!r}")
        if self.neuron == "burst" and per_octave != 1:
            raise ValueError(
                f"levels_per_octave must be 1 for the burst neuron (its levels are binary digits), "
                f"got {per_octave}"
            )
        if self.levels is None:  # frozen: set once, here
            object.__setattr__(self, "levels", 7 * per_octave + 1)
        most = 29 * per_octave + 1  # the top level at most θ·2^29
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or not 1 <= self.levels <= most:
            raise ValueError(f"levels must be an integer in [1, {most}], got {self.levels!r}")
        if (
            isinstance(self.percentile, bool)
            or not isinstance(self.percentile, (int, float))
            or not 0.0 < float(self.percentile) <= 100.0
        ):
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile!r}")
        for name, low in (("horizon", 1), ("sit_steps", 1), ("sit_norm_spikes", 1), ("blocks", 0)):
            value = getattr(self, name)
            if (value is not None or name not in ("blocks", "sit_norm_spikes")) and (
                isinstance(value, bool) or not isinstance(value, int) or value < low
            ):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.method == "sit":
            fitted = sorted(shipped_fits(shifted=self.sit_mode == "shift"))
            if self.sit_steps not in fitted:
                raise ValueError(f"sit_steps must be one of the fitted K {fitted}, got {self.sit_steps!r}")
        at = self.weight_bits_at or {}
        if not isinstance(at, dict) or not all(isinstance(path, str) and path for path in at):
            raise ValueError(f"weight_bits_at must map module paths to bits, got {at!r}")
        if at and self.weight_bits is None:
            raise ValueError("weight_bits_at sets some layers' bits apart from weight_bits: give weight_bits")
        given = [("weight_bits", self.weight_bits)] + [(f"weight_bits_at[{p!r}]", b) for p, b in at.items()]
        for name, bits in given:
            if bits is not None and (
                isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16
            ):
                raise ValueError(f"{name} must be an integer in [2, 16] or None, got {bits!r}")
        if self.neuron == "burst" and self.levels > 16:
            raise ValueError(f"levels must be <= 16 for the burst neuron, got {self.levels}")

    def bits_at(self, path: str) -> int | None:
        """The bits of the synapses of the layer at ``path``: those of the longest path of
        ``weight_bits_at`` that is ``path`` or one of its ancestors, else ``weight_bits``."""
        at = self.weight_bits_at or {}
        found = [p for p in at if _within(path, p)]
        return at[max(found, key=len)] if found else self.weight_bits

    def to_dict(self) -> dict:
        return asdict(self)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _within(path: str, ancestor: str) -> bool:
    """Whether the module at ``path`` is the one at ``ancestor`` or lies under it."""
    return path == ancestor or path.startswith(ancestor + ".")


def prepare(model: nn.Module, options: ConversionOptions, analog: dict[str, str] | None = None) -> nn.Module:
    """A copy of ``model`` in eval mode with observers at every MT site (the model is untouched).

    Args:
        model: the ANN.
        options: the conversion options.
        analog: module paths to leave analog, with the reason (see :func:`convert`).
    """
    network = _untie(copied(model).eval())
    for p in network.parameters():
        p.requires_grad_(False)
    analog = dict(analog or {})
    if options.blocks is not None:
        analog |= _after_blocks(network, options.blocks)
    network = _prepare(network, "", options, direct=frozenset(), analog=analog)
    synapses = [path for path, module in network.named_modules() if isinstance(module, Observed)]
    for path in options.weight_bits_at or {}:
        if not any(_within(p, path) for p in synapses):
            tops = sorted({p.split(".")[0] for p in synapses})
            raise ValueError(f"weight_bits_at: no synaptic layer (a weight layer fed by spikes) at or under "
                             f"{path!r}; they are under {tops}")  # fmt: skip
    return network


def copied(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``. Tensors its modules keep in plain attributes as results of autograd
    (caches: transformers' LeViT keeps its gathered attention biases from a forward run with
    gradients) are copied detached, as ``copy.deepcopy`` copies only tensors that are graph leaves."""
    memo = {}
    for module in model.modules():
        for value in vars(module).values():
            for item in value.values() if isinstance(value, dict) else (value,):
                if isinstance(item, Tensor) and item.grad_fn is not None:
                    memo[id(item)] = item.detach().clone()
    return copy.deepcopy(model, memo)


def _untie(module: nn.Module, seen: set[int] | None = None) -> nn.Module:
    """``module`` with every submodule held at more than one path (CoaT's position encodings, shared
    by a stage's blocks) copied for each path after the first. Converted, a module keeps state per
    call (a membrane, running means), so each use needs its own; the copies hold the same values
    under the paths the ANN's state dict already lists them at."""
    seen = set() if seen is None else seen
    for name, child in list(module._modules.items()):  # named_children() skips a repeated module
        if child is None:
            continue
        if id(child) in seen:
            child = copy.deepcopy(child)
            setattr(module, name, child)
        seen.add(id(child))
        _untie(child, seen)
    return module


def block_paths(network: nn.Module) -> list[str]:
    """The Transformer blocks in forward order: the model's ``blocks`` sequence (timm's ViT, Eva;
    ``encoder.layers`` in torchvision's ViT), or each stage's in turn (``layers.<stage>.blocks``:
    Swin, Swin V2; ``stages.<stage>.blocks``: EdgeNeXt, Next-ViT, whose blocks include their
    convolution blocks); or where the model's rule says (torchvision's Swin; CaiT, whose
    class-attention blocks follow its ``blocks``)."""
    rule = rule_for(network)
    if rule is not None and rule.blocks is not None:
        return rule.blocks(network)
    for name in ("blocks", "encoder.layers"):  # timm's ViTs; torchvision's ViT
        blocks = _submodule(network, name)
        if isinstance(blocks, (nn.Sequential, nn.ModuleList)):
            return [f"{name}.{child}" for child, _ in blocks.named_children()]
    for name in ("layers", "stages"):
        stages = getattr(network, name, None)
        if isinstance(stages, nn.Sequential) and all(
            isinstance(getattr(stage, "blocks", None), (nn.Sequential, nn.ModuleList)) for stage in stages
        ):
            return [
                f"{name}.{s}.blocks.{b}" for s, stage in enumerate(stages) for b, _ in enumerate(stage.blocks)
            ]
    raise ValueError("the model has no 'blocks' sequence of Transformer blocks (nor stages of them)")


def _submodule(network: nn.Module, path: str) -> nn.Module | None:
    try:
        return network.get_submodule(path)
    except AttributeError:
        return None


def _after_blocks(network: nn.Module, count: int) -> dict[str, str]:
    """Modules left analog by ``blocks=count``: from the first block not converted on, every
    module that holds no converted block (later blocks and stages, final norm, heads; timm
    registers modules in forward order) but the linear, stateless ones, kept as they are."""
    try:
        blocks = block_paths(network)
    except ValueError as error:
        raise ValueError(f"blocks={count}: {error}") from None
    if count > len(blocks):
        raise ValueError(f"blocks={count}: the model has only {len(blocks)} blocks")
    if count == len(blocks):
        return {}
    # a converted block's ancestors hold it; any other module from the first analog block on is
    # analog, with all it holds
    holders = {path.rsplit(".", depth)[0] for path in blocks[:count] for depth in range(path.count(".") + 1)}
    modules = dict(network.named_modules())
    paths = list(modules)
    reason = f"after the first {count} blocks"
    analog: dict[str, str] = {}
    for path in paths[paths.index(blocks[count]) :]:
        # a ModuleList is never called (its owner iterates it): its children are left analog instead;
        # a linear, stateless module (dropout, flatten, a pool, or a container of nothing else: timm's
        # average pool) stays as it is, whatever it reads, and so may run more than once a step
        # (CrossViT's head dropout, once per branch), and keeps the methods its owner calls
        kept = isinstance(modules[path], (nn.ModuleList, nn.ModuleDict)) or _linear_stateless(modules[path])
        if path not in holders and not kept and not any(path.startswith(f"{done}.") for done in analog):
            analog[path] = reason
    return analog


def _linear_stateless(module: nn.Module) -> bool:
    """Whether ``module`` is passthrough, or a container whose every module is (timm's
    ``SelectAdaptivePool2d`` of an average pool)."""
    rule = rule_for(module)
    if rule is None or rule.role not in (Role.PASSTHROUGH, Role.CONTAINER):
        return False
    children = list(module.children())
    return rule.role is Role.PASSTHROUGH or (bool(children) and all(map(_linear_stateless, children)))


def _first_weight_layer(module: nn.Module) -> str | None:
    """The path of the first weight layer inside ``module`` (relative to it), in module order."""
    for name, child in module.named_modules():
        rule = rule_for(child)
        if rule is not None and rule.role is Role.WEIGHT:
            return name
    return None


def _missing_rules(module: nn.Module) -> str:
    """Why a module without a rule cannot convert, naming the types of its parts that have none
    too: what registering the model's own class would still leave to do."""
    parts = {type_name(m) for m in module.modules() if m is not module and rule_for(m) is None}
    listed = f" (nor do its parts: {', '.join(sorted(parts))})" if parts else ""
    return f"no conversion rule for this module type{listed}"


def _prepare(
    module: nn.Module, path: str, options: ConversionOptions, direct: frozenset[str], analog: dict[str, str]
) -> nn.Module:
    """``module`` prepared; ``direct`` holds the paths of the weight layers that read the model input."""
    if path in analog:
        return Unconverted(module, analog[path])
    rule = rule_for(module)
    reason = _missing_rules(module) if rule is None else (rule.check and rule.check(module))
    if reason:
        if options.strict:
            raise ConversionError(
                path,
                module,
                f"{reason}; register a rule with transpike.rules.register(), or pass strict=False to "
                "leave it analog",
            )
        return Unconverted(module, reason)
    if rule.twin is not None:
        twin = rule.twin(module)
        if rule_for(twin) is not rule:  # the same rule: this instance needs no twin
            return _prepare(twin, path, options, direct, analog)
    per_channel = options.granularity == "channel"
    if rule.role is Role.WEIGHT:
        if path in direct:  # direct coding: it sees the input at every step, no neuron before it
            return module
        observer = HistogramObserver(rule.channel_dims if per_channel else (), path)
        bits = options.bits_at(path)
        if bits is None:
            return Observed(module, observer)
        # quantized before calibration: the thresholds are set on what the rounded synapses produce
        layer, ann_weight = quantized_layer(
            module, rule, bits, options.weight_granularity, options.weight_scale
        )
        return Observed(layer, observer, ann_weight)
    if rule.role is Role.PRODUCT:
        module.site_a = HistogramObserver(module.channels_a if per_channel else (), _join(path, "site_a"))
        module.site_b = HistogramObserver(module.channels_b if per_channel else (), _join(path, "site_b"))
    elif rule.role in (Role.CONTAINER, Role.INPUT):
        if rule.role is Role.INPUT:
            inside = rule.inputs(module) if rule.inputs is not None else [_first_weight_layer(module)]
            direct = frozenset(_join(path, name) for name in inside if name is not None)
        for name, child in list(module.named_children()):
            setattr(module, name, _prepare(child, _join(path, name), options, direct, analog))
    return module


def _batches(calibration: Tensor | Iterable) -> Iterator[Tensor]:
    """Input tensors from a tensor, an iterable of tensors or of (input, target) pairs."""
    items = [calibration] if isinstance(calibration, Tensor) else calibration
    for item in items:
        yield item[0] if isinstance(item, (tuple, list)) else item


def _check_batch(index: int, x: object, shape: tuple[int, ...] | None) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"calibration batch {index}: expected a floating-point tensor, got {_describe(x)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"calibration batch {index}: contains NaN or Inf")
    if shape is not None and tuple(x.shape[1:]) != shape:
        raise ValueError(
            f"calibration batch {index}: sample shape {tuple(x.shape[1:])} differs from batch 0's {shape}"
        )
    return x


def _run(network: nn.Module, x: Tensor, what: str, run: Callable = nn.Module.__call__) -> object:
    """run(network, x) (by default network(x)) on x moved to the network's device and dtype, with a
    model's own complaint about the input turned into a ValueError."""
    device, dtype = device_dtype(network)
    try:
        return run(network, x.to(device=device, dtype=dtype))
    except (RuntimeError, AssertionError, ValueError, IndexError, TypeError) as error:
        if isinstance(error, ConversionError):
            raise
        raise ValueError(f"{what} of shape {tuple(x.shape)}: the model rejected it: {error}") from None


@torch.inference_mode()
def calibrate(network: nn.Module, calibration: Tensor | Iterable, max_batches: int | None = None) -> dict:
    """Run the prepared network on calibration batches; returns what it ran on: the number of
    ``batches`` and ``samples`` used, the ``sample_shape`` and every sample's ``fingerprints``
    (:mod:`transpike.fingerprints`).

    Every batch must be a finite floating-point tensor with the same sample shape as the first.
    """
    count, shape, seen = 0, None, []
    for index, x in enumerate(_batches(calibration)):
        if max_batches is not None and count >= max_batches:
            break
        shape = tuple(_check_batch(index, x, shape).shape[1:])
        _run(network, x, f"calibration batch {index}")
        count += 1
        seen.append(fingerprints(x))
    if count == 0:
        raise ValueError("calibration is empty: give at least one batch of inputs")
    seen = torch.cat(seen)
    return dict(batches=count, samples=len(seen), sample_shape=list(shape), fingerprints=seen)


def _describe(x: object) -> str:
    return f"tensor of dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__


ThresholdSource = Callable[[HistogramObserver, str], tuple[Tensor, Tensor]]


def calibrated_thresholds(options: ConversionOptions) -> ThresholdSource:
    """θ1, θ2 of a site from its calibration histogram, by the rule the options name."""

    def thresholds(observer: HistogramObserver, neuron_path: str) -> tuple[Tensor, Tensor]:
        if options.threshold == "mse":
            return mse_thresholds(
                observer,
                options.percentile,
                options.levels,
                options.rounding,
                options.neuron,
                options.horizon,
                options.levels_per_octave,
            )
        return percentile_thresholds(observer, options.percentile)

    return thresholds


def to_spiking(
    network: nn.Module, options: ConversionOptions, thresholds: ThresholdSource | None = None
) -> nn.Module:
    """Replace every site, nonlinear module and product of a prepared network by its SNN form, and
    let the converted modules pass each other rates where the containers' rules allow it
    (:func:`transpike.rates.link_rates`).

    Args:
        network: a prepared (and, unless ``thresholds`` says otherwise, calibrated) network.
        options: the conversion options.
        thresholds: gives (θ1, θ2) for an observer and the path its neuron will have; by default
            read from the calibration histograms (:func:`calibrated_thresholds`).
    """
    network = _to_spiking(network, options, thresholds or calibrated_thresholds(options), "")
    link_rates(network)
    return network


def _to_spiking(
    module: nn.Module, options: ConversionOptions, source: ThresholdSource, path: str
) -> nn.Module:

    def neuron(observer: HistogramObserver, name: str) -> MTNeuron:
        theta_pos, theta_neg = source(observer, _join(path, name))
        return MTNeuron(
            theta_pos, theta_neg, options.levels, options.rounding, options.neuron, options.levels_per_octave
        )

    if isinstance(module, Observed):
        return SpikingLayer(neuron(module.observer, "neuron"), module.layer, module.ann_weight)
    if isinstance(module, Product):
        return SpikingProduct(
            neuron(module.site_a, "neuron_a"),
            neuron(module.site_b, "neuron_b"),
            module.op,
            module.scale,
            options.compensation,
        )
    if isinstance(module, Unconverted):
        return ExpectationCompensation(module.module, analog=module.reason)
    rule = rule_for(module)
    if rule is not None and rule.role is Role.NONLINEAR:
        if options.method == "sit" and isinstance(module, nn.Softmax):
            dim = module.dim if module.dim is not None else -1
            module = SpikingSoftmax(dim, options.sit_steps, options.sit_mode, options.sit_norm_spikes)
        return ExpectationCompensation(module, compensated=options.compensation)
    if rule is not None and rule.role in (Role.PASSTHROUGH, Role.CONSTANT):
        return module  # kept as it is, whatever it holds (Swin V2's position-bias MLP has a ReLU)
    for name, child in list(module.named_children()):
        setattr(module, name, _to_spiking(child, options, source, _join(path, name)))
    return module


def convert(
    model: nn.Module,
    calibration: Tensor | Iterable,
    method: str = "ecmt",
    levels: int | None = None,
    percentile: float = 99.0,
    *,
    max_batches: int | None = None,
    model_spec: dict | None = None,
    provenance: dict | None = None,
    **options: object,
) -> SpikingModel:
    """Convert a trained ANN into a spiking network.

    Args:
        model: a module built from supported parts (see :mod:`transpike.rules`); never modified.
        calibration: a tensor batch, or an iterable of batches or (input, target) pairs (a
            DataLoader works). Use training data, not the evaluation set.
        method: "ecmt" or "sit".
        levels: MT levels per sign (default: 8, or 7·s + 1 with ``levels_per_octave=s``).
        percentile: threshold percentile p.
        max_batches: use at most this many calibration batches.
        model_spec: how to rebuild the ANN, ``{"timm": name, "kwargs": {...}}`` (or
            ``"torchvision": name``; :func:`transpike.models.model_spec`); stored by
            :func:`transpike.save` so that :func:`transpike.load` needs no template model.
        provenance: where the network came from (the calibration data's name, the checkpoint),
            kept in ``snn.provenance`` with what calibration ran on (``calibration``: batches,
            samples, sample shape) and saved with it; JSON values.
        **options: any other field of :class:`ConversionOptions` (levels_per_octave, granularity,
            threshold, horizon, rounding, neuron, compensation, strict, sit_steps, sit_mode, blocks,
            weight_bits, weight_granularity, weight_scale, weight_bits_at).

    Returns:
        The :class:`SpikingModel`; ``snn.simulate(x, time_steps)`` gives outputs for every t.

    Raises:
        ConversionError: a module has no rule (with ``strict=True``).
        ValueError: a bad option or calibration input.
    """
    unknown = set(options) - set(ConversionOptions.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown conversion option(s) {sorted(unknown)}; see transpike.ConversionOptions")
    options = ConversionOptions(method=method, levels=levels, percentile=percentile, **options)
    if options.levels_per_octave > 1 and options.threshold == "percentile":
        warnings.warn(
            "levels_per_octave > 1 pays with threshold='mse': percentile thresholds put θ1, the smallest "
            "level, at P_p, below which nearly every value lies, and greedy rounding then overshoots in "
            "the first octave (BENCHMARKS.md §1)",
            UserWarning,
            stacklevel=2,
        )
    batches = _batches(calibration)
    first = next(batches, None)
    if first is None or max_batches == 0:
        raise ValueError("calibration is empty: give at least one batch of inputs")
    first = _check_batch(0, first, None)
    network = prepare(model, options)
    findings = _run(network, first, "calibration batch 0", audit)
    if findings:
        reasons = {f.path: f"forward() runs {f.op} itself (a functional call)" for f in findings}
        if options.strict:
            finding = findings[0]
            raise ConversionError(
                finding.path,
                finding.module,
                f"{reasons[finding.path]}, which would run on spikes step by step; make it a module "
                "(e.g. nn.ReLU) or pass strict=False to leave this module analog",
            )
        network = prepare(model, options, analog=reasons)
    else:
        for observer in network.modules():
            if isinstance(observer, HistogramObserver):
                observer.reset()  # the audit's run is not calibration
    ran = calibrate(network, itertools.chain([first], batches), max_batches)
    seen = ran.pop("fingerprints")
    provenance = dict(provenance or {})
    provenance["calibration"] = {**provenance.get("calibration", {}), **ran}
    return SpikingModel(to_spiking(network, options), options.to_dict(), model_spec, provenance, seen)
