"""Counting what a simulation actually does: spikes and the synaptic operations they trigger.

A :class:`SpikeMonitor` hooks every MT neuron of a :class:`~transpike.model.SpikingModel` and
records, per site and step, the spikes emitted and the accumulate operations (ACs) they cost:

- a weight layer fed by spikes: every spike reaches ``fan_out`` synapses (ECMT §5.4:
  ACs = non-zero inputs × fan-out);
- a product of two spiking operands: the event-driven update of ECMT eq. 17-18,
  K_S(t) = K_S(t-1) + a(t)b(t) + a(t)B(t-1) + A(t-1)b(t), costs one AC per pair of non-zero
  entries that meet in each of the three products, plus the 3·n·m additions into K_S.

A burst neuron's spike of c·θ is popcount(c) spikes, one per level line (ECMT §4.4).
Counting is off unless a monitor is attached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .compensation import SpikingProduct
from .neurons import MTNeuron
from .synapses import SpikingLayer


def spike_counts(x: Tensor, neuron: MTNeuron) -> Tensor:
    """Spikes per neuron in one step: 1 per non-zero MT output, popcount(c) for a burst of c·θ."""
    if neuron.neuron == "mt":
        return (x != 0).to(torch.int64)
    theta = torch.where(x >= 0, neuron.theta_pos.to(x.dtype), neuron.theta_neg.to(x.dtype))
    count = (x.abs() / theta).round_().to(torch.int64)
    bits = torch.arange(neuron.levels, device=x.device)
    return ((count.unsqueeze(-1) >> bits) & 1).sum(-1)


def fan_out(layer: nn.Module) -> float:
    """Synapses one input spike reaches: out_features, or out_channels·kernel/stride for a conv."""
    if isinstance(layer, nn.Linear):
        return float(layer.out_features)
    kernel = torch.tensor(layer.kernel_size, dtype=torch.float64).prod()
    stride = torch.tensor(layer.stride, dtype=torch.float64).prod()
    return float(layer.out_channels * kernel / stride / layer.groups)


def product_operations(a: Tensor, b: Tensor, sum_a: Tensor, sum_b: Tensor, op: str) -> int:
    """ACs of one step of the event-driven product EC (ECMT eq. 17-18), from the actual spikes.

    ``sum_a``, ``sum_b`` are A(t-1), B(t-1). For a matmul [.., n, p] @ [.., p, m], the number of
    (i, j, k) with a_ij ≠ 0 and b_jk ≠ 0 is Σ_j nnz(a[:, j])·nnz(b[j, :]).
    """
    nz = [(u != 0).to(torch.float64) for u in (a, b, sum_a, sum_b)]
    if op == "mul":
        pairs = (nz[0] * nz[1]).sum() + (nz[0] * nz[3]).sum() + (nz[2] * nz[1]).sum()
        return int(pairs) + 3 * a.numel()
    cols = [u.sum(-2) for u in (nz[0], nz[2])]  # non-zeros per column j of a, A
    rows = [u.sum(-1) for u in (nz[1], nz[3])]  # non-zeros per row j of b, B
    pairs = (cols[0] * rows[0]).sum() + (cols[0] * rows[1]).sum() + (cols[1] * rows[0]).sum()
    out_elements = a.shape[-2] * b.shape[-1] * a[..., 0, 0].numel()
    return int(pairs) + 3 * out_elements


@dataclass
class SiteRecord:
    """Per-step counts at one MT site (lists indexed by step - 1)."""

    neurons: int = 0
    spikes: list[int] = field(default_factory=list)
    max_per_neuron: list[int] = field(default_factory=list)
    operations: list[int] = field(default_factory=list)


class SpikeMonitor:
    """Records spikes and synaptic operations of every MT site while attached (a context manager).

    Example:
        with SpikeMonitor(snn) as monitor:
            snn.simulate(x, 8)
        monitor.total_spikes()  # per step
    """

    def __init__(self, snn: nn.Module) -> None:
        network = getattr(snn, "network", snn)
        self.sites: dict[str, SiteRecord] = {}
        self._hooks: list = []
        self._latest: dict[str, Tensor] = {}
        for path, module in network.named_modules():
            if isinstance(module, SpikingLayer):
                self._watch(f"{path}.neuron", module.neuron, fan_out(module.layer))
            elif isinstance(module, SpikingProduct):
                self._watch(f"{path}.neuron_a", module.neuron_a, None)
                self._watch(f"{path}.neuron_b", module.neuron_b, None)
                self.sites[path] = SiteRecord()
                self._hooks.append(module.register_forward_hook(self._product_hook(path)))

    def _watch(self, path: str, neuron: MTNeuron, fanout: float | None) -> None:
        self.sites[path] = SiteRecord()

        def hook(module: MTNeuron, inputs: tuple, x: Tensor) -> None:
            record = self.sites[path]
            counts = spike_counts(x, module)
            record.neurons = x.numel()
            record.spikes.append(int(counts.sum()))
            record.max_per_neuron.append(int(counts.max()) if counts.numel() else 0)
            if fanout is not None:
                record.operations.append(round(record.spikes[-1] * fanout))
            else:
                self._latest[path] = x

        self._hooks.append(neuron.register_forward_hook(hook))

    def _product_hook(self, path: str):
        def hook(module: SpikingProduct, inputs: tuple, out: Tensor) -> None:
            a, b = self._latest[f"{path}.neuron_a"], self._latest[f"{path}.neuron_b"]
            if module.compensated:
                sum_a, sum_b = module.sum_a - a, module.sum_b - b
            else:  # without EC only a(t)·b(t) is computed
                sum_a, sum_b = torch.zeros_like(a), torch.zeros_like(b)
            self.sites[path].operations.append(product_operations(a, b, sum_a, sum_b, module.op))

        return hook

    def __enter__(self) -> SpikeMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._latest.clear()

    def _per_step(self, attribute: str, reduce=sum) -> list[int]:
        series = [getattr(r, attribute) for r in self.sites.values() if getattr(r, attribute)]
        return [reduce(values) for values in zip(*series, strict=True)] if series else []

    def total_spikes(self) -> list[int]:
        """Spikes emitted by all MT neurons, per step."""
        return self._per_step("spikes")

    def total_operations(self) -> list[int]:
        """Synaptic operations (ACs) of weight layers and products, per step."""
        return self._per_step("operations")

    def max_spikes_per_neuron(self) -> int:
        """The largest number of spikes one neuron emitted in one step."""
        return max((max(r.max_per_neuron) for r in self.sites.values() if r.max_per_neuron), default=0)

    def neurons(self) -> int:
        """MT neurons in the network (for the batch simulated)."""
        return sum(r.neurons for r in self.sites.values())
