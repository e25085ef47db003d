"""The converted network: step-by-step simulation and what it is made of.

After t steps, every spiking layer's rate S(t)/t estimates the ANN activation, so the network's
prediction after t steps is the mean of its head outputs over steps 1..t. One call of
:meth:`SpikingModel.simulate` with T steps therefore gives the prediction for every t ≤ T.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .compensation import ExpectationCompensation, SpikingProduct
from .errors import FusionError, GraphError
from .graphs import StepGraphs
from .neurons import MTNeuron
from .rates import link_rates
from .rules import Role, rule_for
from .sit import SpikingSoftmax
from .state import Stateful
from .synapses import SpikingLayer, parallel_network


@dataclass(frozen=True)
class ReportRow:
    """One converted (or unconverted) module: where, what it was, what it became."""

    path: str
    module_type: str
    role: str
    detail: str = ""


class ConversionReport:
    """The modules of a converted network, by role; ``str()`` gives a table."""

    def __init__(self, rows: list[ReportRow]) -> None:
        self.rows = rows

    def by_role(self, role: str) -> list[ReportRow]:
        return [row for row in self.rows if row.role == role]

    @property
    def analog(self) -> list[ReportRow]:
        """Modules left analog because the converter had no rule for them."""
        return self.by_role("analog")

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.role] = counts.get(row.role, 0) + 1
        return counts

    def __str__(self) -> str:
        width = max([len(r.path) for r in self.rows] + [4])
        lines = [f"{'path':<{width}}  {'role':<14} {'module':<22} detail"]
        lines += [f"{r.path:<{width}}  {r.role:<14} {r.module_type:<22} {r.detail}" for r in self.rows]
        summary = ", ".join(f"{n} {role}" for role, n in self.counts().items())
        return "\n".join([*lines, f"total: {summary}"])


def _describe(path: str, module: nn.Module) -> ReportRow | None:
    name = type(module).__name__
    if isinstance(module, SpikingLayer):
        neuron = module.neuron
        detail = f"{neuron.neuron} n={neuron.levels} θ{tuple(neuron.theta_pos.shape) or ''}"
        return ReportRow(path, type(module.layer).__name__, "mt+weight", detail)
    if isinstance(module, SpikingProduct):
        return ReportRow(path, module.op, "mt×mt+product-ec", f"scale={module.scale:.4g}")
    if isinstance(module, ExpectationCompensation):
        f_name = type(module.f).__name__
        if module.analog:
            return ReportRow(path, f_name, "analog", module.analog)
        spiking = module.f.extra_repr() if isinstance(module.f, SpikingSoftmax) else ""  # SIT's settings
        return ReportRow(path, f_name, "ec" if module.compensated else "per-step (no EC)", spiking)
    rule = rule_for(module)
    if rule is not None and rule.role is Role.WEIGHT:
        return ReportRow(path, name, "direct-input", "sees the input at every step; stays analog")
    if rule is not None and rule.role is Role.CONSTANT:
        return ReportRow(path, name, "constant", "independent of the input; work not counted")
    return None


class SpikingModel(nn.Module):
    """A converted spiking network.

    Args:
        network: the converted module tree (see :func:`transpike.convert`).
        options: the conversion options, kept for reports and saving.
        model_spec: how to rebuild the ANN architecture, ``{"timm": name, "kwargs": {...}}`` (or
            ``"torchvision": name``), so
            that :func:`transpike.load` needs no template model; None if unknown.
        provenance: where it came from (:func:`transpike.convert`'s ``provenance``: what
            calibration ran on, the calibration data's name, the checkpoint); saved with it, shown
            by ``transpike info``, not part of :meth:`digest` (the same network calibrated from
            another copy of the data is the same network).
        calibration_fingerprints: int64 [N], a fingerprint of every calibration sample
            (:mod:`transpike.fingerprints`), so that an evaluation can count the samples it was
            calibrated on; None if unknown. Saved with it, not part of :meth:`digest`.
    """

    def __init__(
        self,
        network: nn.Module,
        options: dict,
        model_spec: dict | None = None,
        provenance: dict | None = None,
        calibration_fingerprints: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.options = dict(options)
        self.model_spec = model_spec
        self.provenance = dict(provenance or {})
        self.calibration_fingerprints = calibration_fingerprints
        self._graphs: dict[tuple, StepGraphs] | None = None  # by input shape; see graph()

    def reset(self) -> None:
        """Clear all state (membranes, running sums, step counters)."""
        for module in self.network.modules():
            if isinstance(module, Stateful):
                module.reset()
        for graphs in (self._graphs or {}).values():
            graphs.reset()

    @property
    def device(self) -> torch.device:
        return device_dtype(self.network)[0]

    @property
    def dtype(self) -> torch.dtype:
        return device_dtype(self.network)[1]

    def _input(self, x: Tensor) -> Tensor:
        """x checked (a finite floating-point tensor) and moved to the network's device and dtype."""
        if not isinstance(x, Tensor):
            raise ValueError(f"input x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"input x must be a floating-point tensor, got dtype {x.dtype}")
        # from the extremes (NaN propagates to both): isfinite(x).all() makes a mask of x first,
        # which cost 3 ms of every 224-px batch-8 step on the CPU
        if x.numel() and not all(torch.isfinite(end) for end in torch.aminmax(x)):
            raise ValueError("input x contains NaN or Inf")
        device, dtype = device_dtype(self.network)
        return x.to(device=device, dtype=dtype)

    def _run(self, x: Tensor) -> Tensor:
        """One step; under :meth:`graph` the output is overwritten by the next run's same step."""
        try:
            if self._graphs is None:
                return self.network(x)
            key = (tuple(x.shape), x.dtype, x.stride())
            if key not in self._graphs:
                self._graphs[key] = StepGraphs(self.network, x)
            return self._graphs[key].step(x)
        except (FusionError, GraphError):
            raise  # the environment or the setting, not the input
        except (RuntimeError, AssertionError, IndexError, ValueError, TypeError) as error:
            raise ValueError(
                f"input x of shape {tuple(x.shape)}: the network rejected it: {error}"
            ) from error

    @torch.inference_mode()
    def step(self, x: Tensor) -> Tensor:
        """Run one time step on input x (fed at every step) and return that step's head output."""
        y = self._run(self._input(x))
        return y if self._graphs is None else y.clone()

    @torch.inference_mode()
    def simulate(self, x: Tensor, time_steps: int) -> Tensor:
        """Reset, run ``time_steps`` steps on x, and return the running mean of the head outputs.

        Returns:
            Tensor [T, *output_shape]: ``y[t-1]`` is the mean of the head outputs over steps 1..t,
            the network's prediction after t steps.
        """
        if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
            raise ValueError(f"time_steps must be an integer >= 1, got {time_steps!r}")
        x = self._input(x)
        self.reset()
        total = outputs = None
        for t in range(1, time_steps + 1):
            y = self._run(x)
            if total is None:
                # allocated once: small per-step allocations that outlive the step's temporaries
                # fragment the heap, and the process would grow with T
                total, outputs = y.double(), y.new_empty((time_steps, *y.shape))
            else:
                total.add_(y)
            torch.div(total, t, out=outputs[t - 1])
        return outputs

    def state_bytes(self) -> int:
        """Memory held by the simulation state (membranes, running rates and sums), in bytes.

        It depends on the input shape, not on the number of steps.
        """
        stateful = (module for module in self.network.modules() if isinstance(module, Stateful))
        values = (value for module in stateful for value in module.state().values())
        # an EC module keeps its further inputs' rates in a list
        tensors = (t for v in values for t in (v if isinstance(v, list) else [v]))
        return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, Tensor))

    def ann_state_dict(self) -> dict[str, Tensor]:
        """The converted ANN's weights under the ANN's own keys (thresholds and SI-exp's
        parameters left out).

        Conversion only wraps modules (``layer`` in a :class:`SpikingLayer`, ``f`` in an EC
        module) or replaces the stateless softmax, so unwrapping the keys gives back the ANN's
        state dict exactly; a twin that holds a parameter under another name says so in its
        ``ann_keys`` (``nn.MultiheadAttention``'s packed projection), and one that holds it in
        parts maps each part to (name, index): the parts are joined along the first dimension in
        index order (cross-attention's query and key-value projections). A layer whose weight was
        quantized gives its float weight (``ann_weight``), not the rounded one.
        """
        renames, spiking, twin_keys, parts, floats = {}, [], {}, {}, {}
        for path, module in self.network.named_modules():
            prefix = f"{path}." if path else ""
            for key, ann in getattr(module, "ann_keys", {}).items():
                part = isinstance(ann, tuple)
                twin_keys[prefix + key] = (prefix + ann[0], ann[1]) if part else prefix + ann
            if isinstance(module, SpikingLayer):
                renames[f"{prefix}layer."] = prefix
                if module.ann_weight is not None:
                    floats[f"{prefix}layer.weight"] = f"{prefix}ann_weight"
            elif isinstance(module, ExpectationCompensation):
                renames[f"{prefix}f."] = prefix
            elif isinstance(module, (MTNeuron, SpikingSoftmax)):
                spiking.append(prefix)
        state, network = {}, self.network.state_dict()
        for key, value in network.items():
            if any(key.startswith(prefix) for prefix in spiking) or key in floats.values():
                continue
            value = network[floats[key]] if key in floats else value
            for old, new in renames.items():
                if key.startswith(old):
                    key = new + key[len(old) :]
            name = twin_keys.get(key, key)
            if isinstance(name, tuple):
                parts.setdefault(name[0], {})[name[1]] = value
            else:
                state[name] = value
        return state | {name: torch.cat([part[i] for i in sorted(part)]) for name, part in parts.items()}

    def digest(self) -> str:
        """SHA-256 of what :func:`transpike.save` writes: the options, the model spec and every
        tensor (weights, thresholds) with its name, dtype and shape; not the simulation state.
        Equal digests mean the same network, wherever and however often it was converted."""
        sha = hashlib.sha256(json.dumps([self.options, self.model_spec], sort_keys=True).encode())
        for key, value in sorted(self.network.state_dict().items()):
            value = value.detach().cpu().contiguous()
            sha.update(f"{key} {value.dtype} {tuple(value.shape)}".encode())
            sha.update(value.reshape(-1).view(torch.uint8).numpy())
        return sha.hexdigest()

    def fuse(self, enabled: bool = True) -> SpikingModel:
        """Run every neuron's step as one compiled kernel (:mod:`transpike.fusion`): the MT
        neurons' and, with ``method="sit"``, SI-exp's K internal steps; or, with
        ``enabled=False``, as separate operations again.

        The same spikes bit for bit (tested on the CPU; on a GPU last before a product's operand
        neurons shared one compiled call and the kernel selected its signed threshold). The first
        steps for each new input shape pay the compilation (seconds; on the CPU a C++ compiler must
        be installed). Worth it on the CPU (vit_tiny at batch 8: 2.1-2.3x -> 1.5-1.6x the ANN per
        step on an Intel Xeon, 1.7x -> 1.3-1.4x on an AMD EPYC, BENCHMARKS.md §3; SIT, §5) and
        where memory traffic bounds a GPU step (large batches, §3b). A simulation setting: not
        saved with the network. Returns self.
        """
        for module in self.network.modules():
            if isinstance(module, (MTNeuron, SpikingSoftmax)):
                module.fused = enabled
        if self._graphs:  # captured with the other kind of neuron step
            self._graphs = {}
        return self

    def graph(self, enabled: bool = True) -> SpikingModel:
        """Replay each step as a CUDA graph (:mod:`transpike.graphs`), or, with ``enabled=False``,
        launch its kernels one by one again. Needs the network on a CUDA device.

        The same outputs (tested on a GPU); the first run to reach step t for an input shape
        captures graph t (about one eager step's time). Worth it where launching kernels bounds a
        step (a GPU at small batches, BENCHMARKS.md §3b), and more so with :meth:`fuse`. Hooks
        (a ``SpikeMonitor``) cannot run inside a graph: a step with hooks attached raises
        :class:`GraphError`. Switching resets the state. A simulation setting: not saved with the
        network, and dropped when the network is moved or cast (``to``). Returns self.
        """
        if enabled and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the network on a CUDA device; it is on {self.device}")
        self.reset()
        self._graphs = {} if enabled else None
        return self

    def _apply(self, fn, *args, **kwargs):
        # moving or casting the network leaves captured graphs pointing at the old tensors
        if self._graphs:
            self._graphs = {}
        return super()._apply(fn, *args, **kwargs)

    def parallel(self) -> SpikingModel:
        """This network with the 2n synapse copies of every weight layer materialized (ECMT §4.4).

        Gives the same outputs as the fast path (up to float rounding); for export and inspection.
        Its modules pass increments, not rates (:mod:`transpike.rates`).
        """
        network = parallel_network(self.network)
        link_rates(network, enabled=False)
        return SpikingModel(network, self.options, self.model_spec, self.provenance,
                            self.calibration_fingerprints)  # fmt: skip

    def report(self) -> ConversionReport:
        """What every module became: MT sites, EC modules, products, analog leftovers."""
        rows, skip = [], ()
        for path, module in self.network.named_modules():
            if skip and path.startswith(skip):
                continue
            row = _describe(path or "<root>", module)
            if row is not None:
                rows.append(row)
                skip = (path + ".",) if path else ("",)
        return ConversionReport(rows)


def device_dtype(network: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where a network's parameters (or buffers) live and their dtype; CPU float32 if it has none."""
    # lazily: listing every parameter costs milliseconds, which a GPU step would feel
    tensor = next(itertools.chain(network.parameters(), network.buffers()), None)
    return (tensor.device, tensor.dtype) if tensor is not None else (torch.device("cpu"), torch.float32)
