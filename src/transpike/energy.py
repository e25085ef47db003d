"""Energy accounting: what the converted network does at every step and what that costs.

Two kinds of work are counted, both from what actually runs:

- **synaptic operations** of the spiking network (ACs), from its real spikes, by a
  :class:`~transpike.spikes.SpikeMonitor`;
- **dense work** (matmul/conv multiply-accumulates and elementwise float operations), by a
  dispatch-level counter over one simulation step, attributed to the module that ran it. The dense
  products of a step are exactly the ANN's (same layers, same shapes), which gives the ANN's MACs
  per layer; elementwise operations inside EC modules, products' bookkeeping, the direct-input patch
  embedding and the residual stream are the float work that stays analog, reported separately.
  MACs use PyTorch's own flop formulas (``torch.utils.flop_counter``); an elementwise op counts one
  operation per output element.

Energy (45 nm, Horowitz 2014): E_MAC = 4.6 pJ, E_AC = 0.9 pJ by default (32-bit float), and
E_float (an elementwise float operation) = E_MAC. :data:`ARITHMETIC` holds the three costs for
other number formats from the same table (a MAC is a multiply of the operands' format and an add in
the accumulator's; an AC is that add alone): ``int8`` is a chip with 8-bit weights and activations
accumulating in 32-bit integers, the ANN it is compared with on the same arithmetic, and the float
work (EC modules, norms, softmax) still in 32-bit float. Three SNN/ANN ratios at every t:

- ``ecmt``: E_AC·ACs(≤t) / (E_MAC·MACs), synaptic operations only, as ECMT reports it;
- ``full``: (E_AC·(ACs(≤t) + t·MT neurons) + t·(E_MAC·analog MACs + E_float·analog float ops) per
  step) / (E_MAC·MACs + E_float·ANN float ops), with the energies themselves (pJ per sample). Each
  MT neuron's update at each step, V += I(t), is one AC (since stop 48; its comparison with the
  thresholds and its reset are not priced, as an AC's own control is not): a lower bound;
- ``sit``: SIT-conversion's formula, Σ_l FLOPs_ANN(l)·SpikeNum_l(≤t)/NeuronNum_l · E_AC over
  Σ_l FLOPs_ANN(l)·E_MAC (for a product, NeuronNum and SpikeNum of both operands).

A spiking softmax (``method="sit"``) is charged by its neurons' events, in the full form only (the
other two are the papers' formulas over weight layers): one AC per SI-exp spike (d(t) added to
exp_i), one per element for V_th = Σ_j exp_j, and for SI-norm, with the paper's N_spike shortcut,
one per element for its charge N·exp_i and one per output spike (each subtracts V_th). A row of
softmax then costs about N ACs in SI-norm alone (N: its output resolution 1/N; by default about
256 × the row length).
Its simulation's float operations are neuron dynamics, priced by these events instead, and the
ANN's own softmax on the same input stays in the ANN's float work.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

from .compensation import ExpectationCompensation, SpikingProduct
from .model import SpikingModel
from .neurons import MTNeuron
from .rules import Role, rule_for
from .sit import SpikingSoftmax
from .spikes import SpikeMonitor
from .synapses import SpikingLayer

# pJ per add and per multiply, 45 nm CMOS at 0.9 V (Horowitz, ISSCC 2014, "Computing's energy problem")
ADD_PJ = {"int8": 0.03, "int32": 0.1, "fp16": 0.4, "fp32": 0.9}
MULT_PJ = {"int8": 0.2, "int32": 3.1, "fp16": 1.1, "fp32": 3.7}


def costs(operands: str, accumulator: str, floats: str) -> dict[str, float]:
    """pJ per MAC (a multiply of two ``operands``, an add in the ``accumulator``'s format), per AC
    (that add alone: a spike adds a weight to a membrane potential) and per elementwise float
    operation (charged a MAC of the ``floats`` format, as the full form always has)."""
    return dict(
        e_mac=round(MULT_PJ[operands] + ADD_PJ[accumulator], 6),
        e_ac=ADD_PJ[accumulator],
        e_float=round(MULT_PJ[floats] + ADD_PJ[floats], 6),
    )


# A chip's arithmetic, the SNN's and its ANN's alike: keyword arguments of account and evaluate.
ARITHMETIC = {
    "fp32": costs("fp32", "fp32", "fp32"),
    "fp16": costs("fp16", "fp16", "fp16"),
    "int8": costs("int8", "int32", "fp32"),  # float work (EC modules, norms, softmax) stays fp32
}
E_MAC, E_AC, E_FLOAT = ARITHMETIC["fp32"].values()


def check_costs(prices: dict[str, float]) -> None:
    """Refuse an energy per operation that is negative or not finite, naming its argument."""
    for name, value in prices.items():
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} = {value}: the energy of one operation is a finite number of pJ, >= 0")


# The parts of EnergyReport.breakdown, as the summary names them.
PARTS = {
    "weight": "weight layers' ACs",
    "product": "products' ACs",
    "softmax": "spiking softmax ACs",
    "neuron": "neuron updates",
    "direct-input": "direct-input layer",
    "ann-nonlinear": "EC modules' functions",
    "ec": "EC bookkeeping",
    "analog": "modules left analog",
    "other": "residual sums and token handling",
}
# Dense products that stay dense in the SNN: the direct-input layer, whatever EC modules compute and
# linear work between modules on their outputs (ConViT's constant positional attention times V).
ANALOG_MAC_ROLES = ("direct-input", "analog", "ann-nonlinear", "ec", "other")

aten = torch.ops.aten
# Ops that move or allocate memory without arithmetic.
_MEMORY_OPS = {
    aten.clone, aten.copy_, aten._to_copy, aten.empty_like, aten.empty, aten.zeros_like, aten.zeros,
    aten.ones_like, aten.fill_, aten.cat, aten.stack, aten.new_empty, aten.new_zeros, aten.detach,
    aten.lift_fresh, aten._unsafe_view, aten.contiguous, aten.index, aten.select, aten.slice,
    aten.expand, aten.alias, aten.split, aten.unbind, aten.gather, aten.scalar_tensor,
}  # fmt: skip


@dataclass
class DenseWork:
    """Dense operations of one simulation step, per sample, keyed by (module path, role).

    Roles: ``weight`` (a layer fed by spikes: its MACs are the ANN's), ``product``, ``ec`` (EC
    bookkeeping), ``ann-nonlinear`` (F inside an EC module: the ANN's own nonlinear work),
    ``ann-replaced`` (the ANN's softmax where a spiking softmax replaces it: ANN work only),
    ``analog`` (a module left analog), ``direct-input`` (the patch embedding), ``neuron`` (neuron
    dynamics, a spiking softmax's included: not counted), ``constant`` (a module independent of the
    input, computed once per input size: not counted), ``other`` (residual sums, token handling,
    a constant matrix applied to a layer's output).
    """

    macs: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    elementwise: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))


class _Counter(TorchDispatchMode):
    """Counts every aten op that runs and charges it to the innermost tracked module."""

    def __init__(self, work: DenseWork) -> None:
        super().__init__()
        self.work = work
        self.stack: list[tuple[str, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket not in flop_registry:
            # Composite ops (linear, layer_norm under inference mode) are counted as the ops they
            # decompose into, as torch.utils.flop_counter does.
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        owner = self.stack[-1] if self.stack else ("", "other")
        packet = func.overloadpacket
        if packet in flop_registry:
            self.work.macs[owner] += flop_registry[packet](*args, **kwargs, out_val=out) / 2
        elif packet not in _MEMORY_OPS and not func.is_view:
            outputs = [t for t in tree_leaves(out) if isinstance(t, Tensor) and t.is_floating_point()]
            self.work.elementwise[owner] += sum(t.numel() for t in outputs)
        return out


def _role(module: nn.Module) -> Role | None:
    rule = rule_for(module)
    return rule.role if rule is not None else None


def _tracked(network: nn.Module) -> dict[nn.Module, tuple[str, str]]:
    """Modules whose work is charged separately: module -> (path, role)."""
    tracked: dict[nn.Module, tuple[str, str]] = {}
    # A spiking layer's layer works inside it: a hook of its own would make a layer that hands on
    # rates call it (rate_output) instead of the GEMM the simulation runs.
    inner = {module.layer for module in network.modules() if isinstance(module, SpikingLayer)}
    # what a constant module holds works for it
    constants = [module for module in network.modules() if _role(module) is Role.CONSTANT]
    inner |= {part for module in constants for part in module.modules()}
    for path, module in network.named_modules():
        if _role(module) is Role.CONSTANT:
            tracked[module] = (path, "constant")
        elif isinstance(module, SpikingLayer):
            tracked[module] = (path, "weight")
        elif isinstance(module, SpikingProduct):
            tracked[module] = (path, "product")
        elif isinstance(module, ExpectationCompensation):
            tracked[module] = (path, "analog" if module.analog else "ec")
            tracked[module.f] = (path, "neuron" if isinstance(module.f, SpikingSoftmax) else "ann-nonlinear")
        elif isinstance(module, MTNeuron):
            tracked[module] = (path, "neuron")
        elif module not in tracked and module not in inner and _role(module) is Role.WEIGHT:
            tracked[module] = (path, "direct-input")
    return tracked


def count_dense_work(snn: SpikingModel, x: Tensor) -> DenseWork:
    """The dense operations of one steady-state step (t = 2) on input x, per sample."""
    work = DenseWork()
    tracked = _tracked(snn.network)
    counter = _Counter(work)

    def enter(module: nn.Module, inputs: tuple) -> None:
        counter.stack.append(tracked[module])

    def leave(module: nn.Module, inputs: tuple, output: object) -> None:
        counter.stack.pop()

    def ann_softmax(module: SpikingSoftmax, inputs: tuple, output: object) -> None:
        # the ANN's own softmax on the same input: the float work the spiking one replaces
        counter.stack.append((tracked[module][0], "ann-replaced"))
        torch.softmax(inputs[0], module.dim)
        counter.stack.pop()

    hooks = [m.register_forward_pre_hook(enter) for m in tracked]
    hooks += [m.register_forward_hook(leave) for m in tracked]
    hooks += [m.register_forward_hook(ann_softmax) for m in tracked if isinstance(m, SpikingSoftmax)]
    try:
        snn.reset()
        snn.step(x)
        with counter:
            snn.step(x)
    finally:
        for hook in hooks:
            hook.remove()
        snn.reset()
    for table in (work.macs, work.elementwise):
        for key in table:
            table[key] /= x.shape[0]
    return work


# EnergyReport's fields under other names in its to_dict
_KEYS = dict(e_mac="e_mac_pj", e_ac="e_ac_pj", e_float="e_float_pj", acs="snn_acs")


@dataclass
class EnergyReport:
    """Per-layer operation counts and SNN/ANN energy ratios at every t, per sample.

    The counts are kept apart from the energy per operation (``e_mac``, ``e_ac``, ``e_float``):
    ``ratio``, ``ann_energy`` and ``snn_energy`` price them, and :meth:`priced` gives the same
    counts at other prices without simulating again. ``layers``: weight layers and products fed by
    spikes (ANN MACs, SNN ACs per step, input firing rate per step). ``analog``: the float work
    that stays analog, per module and step. ``sites``: every MT site's firing rate per step and
    cumulative, and its spikes per level and sign.
    """

    time_steps: int
    samples: int
    e_mac: float
    e_ac: float
    e_float: float
    ann_macs: float
    ann_float_ops: float
    snn_analog_macs_per_step: float
    snn_elementwise_ops_per_step: float
    neurons: float  # MT neurons, each updated at every step
    acs: list[float]  # synaptic operations at step t (not cumulative)
    softmax_acs: list[float]  # the spiking softmaxes' ACs at step t (method "sit"; in "full" only)
    sit_acs: list[float]  # SIT: Σ_l FLOPs_ANN(l)·SpikeNum_l(≤t)/NeuronNum_l after t steps
    synaptic_macs: float  # SIT: Σ_l FLOPs_ANN(l) over the weight layers and products
    layers: list[dict]
    analog: list[dict]
    softmaxes: list[dict]
    sites: list[dict]
    level_histogram: list[list[float]]  # [2][n] spikes per sign and level, all sites and steps
    max_spikes_per_neuron_step: int

    def to_dict(self) -> dict:
        """The counts (the keys :meth:`from_dict` reads back), their prices and what they give."""
        ratio = self.ratio  # priced once
        return dict(
            samples=self.samples,
            e_mac_pj=self.e_mac,
            e_ac_pj=self.e_ac,
            e_float_pj=self.e_float,
            ann_macs=self.ann_macs,
            ann_float_ops=self.ann_float_ops,
            snn_float_ops_per_step=self.snn_float_ops_per_step,
            snn_analog_macs_per_step=self.snn_analog_macs_per_step,
            snn_elementwise_ops_per_step=self.snn_elementwise_ops_per_step,
            neurons=self.neurons,
            ann_energy_pj=self.ann_energy,
            snn_energy_pj=self.snn_energy,
            snn_acs=self.acs,
            softmax_acs=self.softmax_acs,
            sit_acs=self.sit_acs,
            synaptic_macs=self.synaptic_macs,
            energy_ratio=ratio["ecmt"],
            energy_ratio_full=ratio["full"],
            energy_ratio_sit=ratio["sit"],
            costlier_from={form: self.costlier_from(form) for form in self.ratio},
            breakdown_pj=self.breakdown(),
            max_spikes_per_neuron_step=self.max_spikes_per_neuron_step,
            level_histogram=self.level_histogram,
            layers=self.layers,
            analog=self.analog,
            softmaxes=self.softmaxes,
            sites=self.sites,
        )

    @classmethod
    def from_dict(cls, energy: dict) -> EnergyReport:
        """The report whose :meth:`to_dict` is ``energy`` (results.json's ``energy`` section), to
        price again with :meth:`priced`.

        Raises:
            ValueError: a key it needs is missing (a file from before transpike counted it).
        """
        keys = {f.name: _KEYS.get(f.name, f.name) for f in fields(cls) if f.name != "time_steps"}
        missing = sorted(key for key in keys.values() if key not in energy)
        if missing:
            raise ValueError(
                f"the energy section lacks {', '.join(missing)}: written by an earlier transpike; "
                "evaluate again to price it"
            )
        return cls(time_steps=len(energy["snn_acs"]), **{name: energy[key] for name, key in keys.items()})

    @property
    def snn_float_ops_per_step(self) -> float:
        """The analog MACs and elementwise float operations of one step."""
        return self.snn_analog_macs_per_step + self.snn_elementwise_ops_per_step

    @property
    def ann_energy(self) -> float:
        """pJ per sample of the ANN: E_MAC·MACs + E_float·float ops."""
        return self.e_mac * self.ann_macs + self.e_float * self.ann_float_ops

    @property
    def snn_energy(self) -> list[float]:
        """pJ per sample of the SNN after t steps (the full form): E_AC·(ACs + spiking softmax ACs)(≤t)
        + t·(E_AC·MT neurons + E_MAC·analog MACs + E_float·analog float ops)."""
        acs, softmax_acs = (torch.tensor(v, dtype=torch.float64) for v in (self.acs, self.softmax_acs))
        synaptic = acs + softmax_acs
        analog = (
            self.e_ac * self.neurons
            + self.e_mac * self.snn_analog_macs_per_step
            + self.e_float * self.snn_elementwise_ops_per_step
        )
        steps = torch.arange(1, self.time_steps + 1, dtype=torch.float64)
        return (self.e_ac * synaptic.cumsum(0) + steps * analog).tolist()

    @property
    def ratio(self) -> dict[str, list[float]]:
        """SNN/ANN energy after t steps in each form (module doc): "ecmt", "full", "sit"."""
        acs = torch.tensor(self.acs, dtype=torch.float64).cumsum(0)
        sit = torch.tensor(self.sit_acs, dtype=torch.float64)
        return dict(
            ecmt=(self.e_ac * acs / (self.e_mac * self.ann_macs)).tolist(),
            full=(torch.tensor(self.snn_energy, dtype=torch.float64) / self.ann_energy).tolist(),
            sit=(self.e_ac * sit / (self.e_mac * max(self.synaptic_macs, 1e-30))).tolist(),
        )

    def priced(self, e_mac: float = E_MAC, e_ac: float = E_AC, e_float: float = E_FLOAT) -> EnergyReport:
        """The same counts at other energies per operation (pJ), e.g. ``**ARITHMETIC["int8"]``."""
        check_costs(dict(e_mac=e_mac, e_ac=e_ac, e_float=e_float))
        return replace(self, e_mac=e_mac, e_ac=e_ac, e_float=e_float)

    def breakdown(self, t: int | None = None) -> dict[str, float]:
        """Where the SNN's energy goes: pJ per sample after t steps (default T, the full form) by
        part, summing to ``snn_energy[t - 1]``: ``weight`` and ``product`` (the synaptic ACs of
        weight layers and of products of spiking operands), ``softmax`` (the spiking softmaxes'
        ACs), ``neuron`` (the MT neurons' updates) and the analog work of each role of
        :class:`DenseWork` (``direct-input``, ``ann-nonlinear``, ``ec``, ``analog``, ``other``)."""
        t = self.time_steps if t is None else t
        if not 1 <= t <= self.time_steps:
            raise ValueError(f"t = {t}: the report covers t = 1..{self.time_steps}")
        parts: dict[str, float] = defaultdict(float)
        for layer in self.layers:
            parts[layer["kind"]] += self.e_ac * sum(layer["snn_acs"][:t])
        parts["softmax"] += self.e_ac * sum(self.softmax_acs[:t])
        parts["neuron"] += t * self.e_ac * self.neurons
        for row in self.analog:
            parts[row["role"]] += t * (self.e_mac * row["macs"] + self.e_float * row["float_ops"])
        return dict(parts)

    def costlier_from(self, form: str = "full") -> int | None:
        """The first t after which the SNN has spent more than its ANN (``form``: "ecmt", "full" or
        "sit"; None: not within T)."""
        return next((t for t, ratio in enumerate(self.ratio[form], 1) if ratio > 1), None)

    def summary(self) -> str:
        ratio, spent = self.ratio, self.snn_energy  # priced once
        lines = [
            f"ANN: {self.ann_macs / 1e6:.2f} M MACs + {self.ann_float_ops / 1e6:.2f} M other float ops per "
            f"sample; SNN: {self.snn_float_ops_per_step / 1e6:.2f} M analog float ops per step",
            f"at {self.e_mac:g} pJ per MAC, {self.e_ac:g} per AC, {self.e_float:g} per float op: ANN "
            f"{self.ann_energy / 1e6:.4g} µJ per sample",
            "  t   ACs (M)   energy SNN/ANN: ECMT form   full form   SIT formula   SNN µJ (full)",
        ]
        lines += [
            f"{t + 1:>3}   {sum(self.acs[: t + 1]) / 1e6:7.2f}   {ratio['ecmt'][t]:25.3f}   "
            f"{ratio['full'][t]:9.3f}   {ratio['sit'][t]:11.3f}   {spent[t] / 1e6:13.4g}"
            for t in range(self.time_steps)
        ]
        parts = sorted(self.breakdown().items(), key=lambda item: -item[1])
        total = sum(value for _, value in parts) or 1.0
        lines.append(
            f"where it goes after t = {self.time_steps} (full form): "
            + ", ".join(f"{PARTS[name]} {100 * value / total:.0f} %" for name, value in parts if value > 0)
        )
        costlier = self.costlier_from()
        lines.append(
            f"the SNN has spent more than its ANN from t = {costlier} on (full form)"
            if costlier
            else f"within t <= {self.time_steps} the SNN spends less than its ANN (full form)"
        )
        if self.softmaxes:
            exp, norm = (
                sum(row[key][-1] for row in self.softmaxes) for key in ("si_exp_spikes", "si_norm_spikes")
            )
            lines.append(
                f"spiking softmax at t = {self.time_steps}: {self.softmax_acs[-1] / 1e6:.2f} M ACs per step "
                f"({exp / 1e6:.2f} M SI-exp and {norm / 1e6:.2f} M SI-norm spikes; in the full form)"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _padded(series: list[Tensor], steps: int) -> Tensor:
    return torch.tensor(
        [float(series[t]) if t < len(series) else 0.0 for t in range(steps)], dtype=torch.float64
    )


def _site_rows(monitor: SpikeMonitor, samples: int, steps: int) -> list[dict]:
    rows = []
    for record in monitor.sites.values():
        rate = _padded(record.spikes, steps) / max(record.neurons, 1)
        histogram = record.histogram if record.histogram is not None else torch.zeros(2, record.levels)
        rows.append(
            dict(
                path=record.path,
                neurons=record.neurons / samples,
                firing_rate=rate.tolist(),
                cumulative_firing_rate=(rate.cumsum(0) / torch.arange(1, steps + 1)).tolist(),
                level_histogram=(histogram / samples).tolist(),
            )
        )
    return rows


def _softmax_rows(monitor: SpikeMonitor, samples: int, steps: int) -> list[dict]:
    """Per spiking softmax and sample: elements, SI-exp and SI-norm spikes and ACs per step (module doc)."""
    rows = []
    for record in monitor.softmaxes.values():
        exp, norm = (_padded(series, steps) / samples for series in (record.exp_spikes, record.norm_spikes))
        elements = record.elements / samples
        rows.append(dict(path=record.path, elements=elements, si_exp_spikes=exp.tolist(),
                         si_norm_spikes=norm.tolist(), acs=(exp + norm + 2 * elements).tolist()))  # fmt: skip
    return rows


def energy_report(
    monitor: SpikeMonitor,
    dense: DenseWork,
    samples: int,
    time_steps: int,
    e_mac: float = E_MAC,
    e_ac: float = E_AC,
    e_float: float = E_FLOAT,
) -> EnergyReport:
    """Combine spike counts (summed over ``samples`` inputs) with the dense work of one step, at
    ``e_mac``, ``e_ac`` and ``e_float`` pJ per operation."""
    macs = {path: value for (path, role), value in dense.macs.items() if role in ("weight", "product")}
    layers, sit_acs = [], torch.zeros(time_steps, dtype=torch.float64)
    for path, record in monitor.operations.items():
        sites = [monitor.sites[s] for s in record.inputs]
        neurons = max(sum(s.neurons for s in sites), 1)
        rate = torch.stack([_padded(s.spikes, time_steps) for s in sites]).sum(0) / neurons
        sit_acs += macs.get(path, 0.0) * rate.cumsum(0)  # SIT: FLOPs_ANN × SpikeNum / NeuronNum
        acs = _padded(record.operations, time_steps) / samples
        layers.append(
            dict(path=path, kind=record.kind, ann_macs=macs.get(path, 0.0), snn_acs=acs.tolist(),
                 input_firing_rate=rate.tolist())
        )  # fmt: skip
    analog = [
        dict(path=path, role=role, float_ops=dense.elementwise.get((path, role), 0.0),
             macs=dense.macs.get((path, role), 0.0) if role in ANALOG_MAC_ROLES else 0.0)
        for path, role in sorted(set(dense.elementwise) | set(dense.macs))
        if role not in ("weight", "neuron", "ann-replaced", "constant")
    ]  # fmt: skip
    ann_macs = sum(value for (_, role), value in dense.macs.items() if role not in ("neuron", "constant"))
    ann_float = sum(
        value
        for (_, role), value in dense.elementwise.items()
        if role in ("ann-nonlinear", "ann-replaced", "other")
    )
    acs = sum(
        (_padded(r.operations, time_steps) for r in monitor.operations.values()), torch.zeros(time_steps)
    )
    softmaxes = _softmax_rows(monitor, samples, time_steps)
    rows = [row["acs"] for row in softmaxes]
    softmax_acs = torch.tensor(rows, dtype=torch.float64).reshape(len(rows), time_steps).sum(0)
    histograms = [r.histogram for r in monitor.sites.values() if r.histogram is not None]
    same_levels = histograms and all(h.shape == histograms[0].shape for h in histograms)
    return EnergyReport(
        time_steps=time_steps,
        samples=samples,
        e_mac=e_mac,
        e_ac=e_ac,
        e_float=e_float,
        ann_macs=ann_macs,
        ann_float_ops=ann_float,
        snn_analog_macs_per_step=sum(row["macs"] for row in analog),
        snn_elementwise_ops_per_step=sum(row["float_ops"] for row in analog),
        neurons=sum(record.neurons for record in monitor.sites.values()) / samples,
        acs=(acs / samples).tolist(),
        softmax_acs=softmax_acs.tolist(),
        sit_acs=sit_acs.tolist(),
        synaptic_macs=sum(macs.values()),
        layers=layers,
        analog=analog,
        softmaxes=softmaxes,
        sites=_site_rows(monitor, samples, time_steps),
        level_histogram=(sum(histograms) / samples).tolist() if same_levels else [],
        max_spikes_per_neuron_step=monitor.max_spikes_per_neuron(),
    )


def account(
    snn: SpikingModel,
    x: Tensor,
    time_steps: int,
    e_mac: float = E_MAC,
    e_ac: float = E_AC,
    e_float: float = E_FLOAT,
) -> EnergyReport:
    """Simulate ``time_steps`` steps on x and report what every layer did and cost, per sample.

    Args:
        snn: the converted network.
        x: an input batch.
        time_steps: T.
        e_mac, e_ac, e_float: energy per multiply-accumulate, per accumulate and per elementwise
            float operation (pJ); ``**ARITHMETIC["int8"]`` gives all three for another arithmetic.
    """
    check_costs(dict(e_mac=e_mac, e_ac=e_ac, e_float=e_float))
    dense = count_dense_work(snn, x[:1])  # the same for every sample: one is enough
    with SpikeMonitor(snn) as monitor:
        snn.simulate(x, time_steps)
    return energy_report(monitor, dense, x.shape[0], time_steps, e_mac, e_ac, e_float)
