"""Counting what a simulation actually does: spikes, spikes per level, and synaptic operations.

A :class:`SpikeMonitor` hooks every MT neuron of a :class:`~transpike.model.SpikingModel` and
records, per site and step (summed over all inputs simulated while it is attached):

- the spikes emitted and their histogram over threshold levels and signs (ECMT §5.4 reports that
  most spikes land on the lowest levels θ1 and -θ2);
- the accumulate operations (ACs) they trigger. A weight layer fed by spikes costs non-zero inputs
  × fan-out; a product of two spiking operands costs the event-driven update of ECMT eq. 17-18,
  K_S(t) = K_S(t-1) + a(t)b(t) + a(t)B(t-1) + A(t-1)b(t): one AC per pair of non-zero entries that
  meet in each of the three products, plus the 3·n·m additions into K_S.

A burst neuron's output c·θ is popcount(c) spikes, one per level line (ECMT §4.4). A spiking
softmax (SIT-conversion) records its SI-exp spikes (all K internal steps) and its SI-norm output
spikes (N·softmax per element, N from :meth:`~transpike.sit.SpikingSoftmax.spikes_for`). Nothing
is counted unless a monitor is attached, so simulation without one pays nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .compensation import SpikingProduct
from .neurons import MTNeuron, _signed_threshold
from .sit import SpikingSoftmax
from .synapses import SpikingLayer


def _exponent_bins(theta_pos: Tensor, theta_neg: Tensor, levels: int) -> Tensor:
    """For an MT output x = ±θ·2^k: the histogram bin of each (sign, exponent) code of x.

    The top 9 bits of a float32 are its sign and exponent. Multiplying θ by 2^k only adds k to the
    exponent, so the code of x tells its sign and level exactly: code - code(θ) = k. Bins: 0 and
    n+1 hold "no spike" (x = ±0); 1..n the positive levels; n+2..2n+1 the negative ones. Returns
    [C, 512] bins per channel of the thresholds (C = 1 for per-tensor thresholds).
    """
    theta_pos, theta_neg = theta_pos.float(), theta_neg.float()
    # the level-0 output on each side, computed exactly as mt_fire computes it
    sides = [
        _signed_threshold(torch.full_like(theta_pos, s), theta_pos, theta_neg, None) for s in (1.0, -1.0)
    ]
    codes = [(side.reshape(-1, 1).view(torch.int32) >> 23) & 0xFF for side in sides]
    exponent = torch.arange(256, device=theta_pos.device)
    positive = (exponent - codes[0] + 1).clamp_(0, levels)  # 0: below θ1, i.e. x = 0
    negative = (exponent - codes[1] + 1).clamp_(0, levels) + levels + 1
    return torch.cat([positive, negative], dim=1)


#: burst counts are told apart by a float32's sign, exponent and top n mantissa bits up to this n
#: (2^(9+n) histogram bins); above it, or with per-channel thresholds, by a division
BURST_CODE_LEVELS = 8


def _burst_codes(theta_pos: Tensor, theta_neg: Tensor, levels: int, dtype: torch.dtype) -> Tensor | None:
    """For a burst output x = ±c·θ (per-tensor θ): the code of each count c = 0..2^n-1 on each
    side, [2, 2^n], from the top 9 + n bits of x as a float32, or None where that does not tell
    the counts apart.

    c·θ for 2^j ≤ c < 2^(j+1) spans one or two binades, in which consecutive counts differ by θ,
    more than 2^-n of the binade: the top n mantissa bits tell them apart (0 is ±0). The table is
    built from the outputs themselves, computed as :func:`transpike.neurons.burst_fire` computes
    them (in the neuron's dtype, then converted), and checked for collisions (half precision).
    """
    if levels > BURST_CODE_LEVELS or theta_pos.numel() != 1:
        return None
    signs = torch.tensor([1.0, -1.0], dtype=dtype, device=theta_pos.device)
    theta = _signed_threshold(signs, theta_pos.reshape(()).to(dtype), theta_neg.reshape(()).to(dtype), None)
    counts = torch.arange(2**levels, dtype=dtype, device=theta_pos.device)
    outputs = (counts.unsqueeze(0) * theta.unsqueeze(1)).float()
    codes = (outputs.view(torch.int32) >> (23 - levels)) & ((1 << (9 + levels)) - 1)
    return codes if codes.unique().numel() == codes.numel() else None


class SpikeStatistics:
    """Spikes per sign and level of one neuron layer's output, and the most spikes of one neuron.

    An MT neuron fires one spike on level k, read from the exponent bits of its output (see
    :func:`_exponent_bins`): two passes over the output, no division, no mask; with levels s to an
    octave (θ·2^(k/s)), k = s·log2(|x|/θ), rounded. A burst output c·θ
    is popcount(c) spikes, one per binary digit of c = |x|/θ < 2^n, c read from the output's top
    bits as well (:func:`_burst_codes`) where that tells the counts apart, else from a division.
    Tables that depend only on the thresholds are built once (per dtype).
    """

    def __init__(self, neuron: MTNeuron) -> None:
        self.neuron = neuron
        n = neuron.levels
        if neuron.per_octave > 1:
            return  # nothing to tabulate: levels are read with a logarithm
        if neuron.neuron == "mt":
            # per-channel thresholds: one block of 512 codes per distinct table, not per channel
            # (channels whose thresholds share their exponents share a table; a small histogram
            # stays in cache)
            tables, group = torch.unique(
                _exponent_bins(neuron.theta_pos, neuron.theta_neg, n), dim=0, return_inverse=True
            )
            self.bins = tables.flatten()
            self.offset = (group.view(neuron.theta_pos.shape) * 512).int() if tables.shape[0] > 1 else None
        else:
            # x = ±c·θ: the signed count is α·x + β·|x| with α + β = 1/θ1 and α - β = 1/θ2
            inverse_pos, inverse_neg = 1 / neuron.theta_pos.float(), 1 / neuron.theta_neg.float()
            self.alpha, self.beta = (inverse_pos + inverse_neg) / 2, (inverse_pos - inverse_neg) / 2
            values = torch.arange(2**n)
            self.bits = (values.unsqueeze(1) >> torch.arange(n)) & 1
            self.popcount = self.bits.sum(1)
            self.codes: dict[torch.dtype, Tensor | None] = {}

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """([2, n] spikes per sign and level, max spikes of one neuron) for one step's output x."""
        neuron, n = self.neuron, self.neuron.levels
        if neuron.per_octave > 1:
            x = x.float()
            theta = _signed_threshold(x, neuron.theta_pos.float(), neuron.theta_neg.float(), None)
            level = x.div(theta).log2_().mul_(neuron.per_octave).round_()  # -inf: no spike
            # positive levels 0..n-1, negative n..2n-1, no spike 2n
            # (a float mask with alpha: a bool times an int would promote through int64, 7x slower)
            index = level.add_(x.lt(0).to(level.dtype), alpha=n).nan_to_num_(neginf=2 * n).to(torch.int32)
            histogram = torch.bincount(index.flatten(), minlength=2 * n + 1)[: 2 * n].view(2, n)
            return histogram, (histogram.sum() > 0).to(torch.int64)
        if neuron.neuron == "mt":
            code = (x.float().view(torch.int32) >> 23).bitwise_and_(0x1FF)
            if self.offset is not None:
                code.add_(self.offset.to(x.device))
            per_code = torch.bincount(code.flatten(), minlength=self.bins.numel())
            histogram = torch.zeros(2 * (n + 1), dtype=per_code.dtype, device=x.device)
            histogram = histogram.index_add_(0, self.bins.to(x.device), per_code).view(2, n + 1)[:, 1:]
            return histogram, (histogram.sum() > 0).to(torch.int64)
        # burst counts are < 2^n: histogram the counts per side, [2, 2^n], then split each into its bits
        if x.dtype not in self.codes:
            self.codes[x.dtype] = _burst_codes(neuron.theta_pos, neuron.theta_neg, n, x.dtype)
        codes, x = self.codes[x.dtype], x.float()
        if codes is not None:  # two integer passes
            code = (x.view(torch.int32) >> (23 - n)).bitwise_and_((1 << (9 + n)) - 1)
            per_value = torch.bincount(code.flatten(), minlength=1 << (9 + n))[codes.to(x.device)]
        else:
            values = 2**n
            count = torch.abs(x).mul_(self.beta.to(x.device)).addcmul_(x, self.alpha.to(x.device))
            # Adding 2^23 rounds to an integer and leaves it in the mantissa bits: index = count + 2^n - 1
            index = count.add_(2.0**23 + values - 1).view(torch.int32).bitwise_and_(0x7FFFFF)
            per_index = torch.bincount(index.flatten(), minlength=2 * values - 1)
            per_value = torch.stack([per_index[values - 1 : 2 * values - 1], per_index[:values].flip(0)])
        popcount = self.popcount.to(x.device)
        # spikes per level: Σ_c count(c)·bit_k(c), as a sum (CUDA has no integer matrix product)
        spikes = (per_value.unsqueeze(-1) * self.bits.to(x.device)).sum(1)
        return spikes, torch.where(per_value.sum(0) > 0, popcount, 0).max()


def fan_out(layer: nn.Module) -> float:
    """Synapses one input spike reaches: out_features, or out_channels·kernel/stride for a conv."""
    if isinstance(layer, nn.Linear):
        return float(layer.out_features)
    kernel = torch.tensor(layer.kernel_size, dtype=torch.float64).prod()
    stride = torch.tensor(layer.stride, dtype=torch.float64).prod()
    return float(layer.out_channels * kernel / stride / layer.groups)


def product_operations(a: Tensor, b: Tensor, nnz_sum_a: Tensor, nnz_sum_b: Tensor, op: str) -> Tensor:
    """ACs of one step of the event-driven product EC (ECMT eq. 17-18), from the actual spikes.

    ``nnz_sum_a``, ``nnz_sum_b`` say where A(t-1), B(t-1) are non-zero: per column (matmul) or per
    element (elementwise). For a matmul [.., n, p] @ [.., p, m], the number of (i, j, k) with
    a_ij ≠ 0 and b_jk ≠ 0 is Σ_j nnz(a[:, j])·nnz(b[j, :]).
    """
    if op == "mul":
        nz_a, nz_b = a.bool(), b.bool()  # non-zero masks; a cast is faster than a != 0 on CPU
        pairs = (nz_a & nz_b).sum() + (nz_a & nnz_sum_b).sum() + (nnz_sum_a & nz_b).sum()
        # an operand may be broadcast (squeeze-and-excitation's scale): one update per output
        return (pairs + 3 * torch.broadcast_shapes(a.shape, b.shape).numel()).double()
    cols_a, rows_b = _nonzeros(a, -2), _nonzeros(b, -1)
    pairs = (cols_a * (rows_b + nnz_sum_b)).sum() + (nnz_sum_a * rows_b).sum()
    # an operand may be broadcast over the other's leading dims (a key shared by all heads)
    products = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]).numel()
    return pairs + 3 * a.shape[-2] * b.shape[-1] * products


def _nonzeros(u: Tensor, dim: int) -> Tensor:
    # |sign(u)| summed as floats is several times faster on CPU than counting u != 0 (a bool
    # reduction), and exact for rows shorter than 2^24; float64 keeps the products exact
    nonzero = torch.sign(u).abs_()
    return nonzero.sum(dim, dtype=torch.promote_types(nonzero.dtype, torch.float32)).double()


def operand_nonzeros(sum_a: Tensor, sum_b: Tensor, op: str) -> tuple[Tensor, Tensor]:
    """Where the running sums are non-zero, in the form :func:`product_operations` takes."""
    if op == "mul":
        return sum_a.bool(), sum_b.bool()
    return _nonzeros(sum_a, -2), _nonzeros(sum_b, -1)


def _grow(series: list[Tensor], t: int, value: Tensor) -> None:
    """series[t-1] += value, extending the list as new steps appear."""
    while len(series) < t:
        series.append(torch.zeros((), dtype=torch.float64, device=value.device))
    series[t - 1] = series[t - 1] + value


@dataclass
class SiteRecord:
    """What one MT site did, summed over the inputs simulated (lists indexed by step - 1)."""

    path: str
    levels: int
    neurons: int = 0  # per step, summed over inputs
    spikes: list[Tensor] = field(default_factory=list)
    histogram: Tensor | None = None  # [2, levels], over all steps
    max_per_neuron: Tensor | None = None


@dataclass
class OperationRecord:
    """Synaptic operations of one weight layer or product (lists indexed by step - 1)."""

    path: str
    kind: str  # "weight" or "product"
    inputs: tuple[str, ...]  # the MT sites that feed it
    fan_out: float = 0.0
    operations: list[Tensor] = field(default_factory=list)


@dataclass
class SoftmaxRecord:
    """What one spiking softmax did, summed over the inputs simulated (lists indexed by step - 1)."""

    path: str
    elements: int = 0  # per step, summed over inputs
    exp_spikes: list[Tensor] = field(default_factory=list)  # SI-exp, all internal steps
    norm_spikes: list[Tensor] = field(default_factory=list)  # SI-norm's output spikes


class SpikeMonitor:
    """Records spikes and synaptic operations of every MT site while attached (a context manager).

    Example:
        with SpikeMonitor(snn) as monitor:
            snn.simulate(x, 8)
        monitor.sites["blocks.0.mlp.fc1.neuron"].spikes  # per step
    """

    def __init__(self, snn: nn.Module) -> None:
        network = getattr(snn, "network", snn)
        self.sites: dict[str, SiteRecord] = {}
        self.operations: dict[str, OperationRecord] = {}
        self.softmaxes: dict[str, SoftmaxRecord] = {}
        self._hooks: list = []
        self._observed: list[SpikingSoftmax] = []  # their `observe` is ours while attached
        self._latest: dict[str, Tensor] = {}
        self._step = 0
        neurons = [m for m in network.modules() if isinstance(m, MTNeuron)]
        self._probe = neurons[0] if neurons else None
        self._hooks.append(network.register_forward_pre_hook(self._count_step))
        for path, module in network.named_modules():
            if isinstance(module, SpikingLayer):
                site = self._watch(f"{path}.neuron", module.neuron)
                self.operations[path] = OperationRecord(path, "weight", (site,), fan_out(module.layer))
            elif isinstance(module, SpikingProduct):
                sites = (
                    self._watch(f"{path}.neuron_a", module.neuron_a),
                    self._watch(f"{path}.neuron_b", module.neuron_b),
                )
                self.operations[path] = OperationRecord(path, "product", sites)
                self._hooks.append(module.register_forward_hook(self._product_hook(path)))
            elif isinstance(module, SpikingSoftmax):
                self.softmaxes[path] = SoftmaxRecord(path)
                self._watch_softmax(module, self.softmaxes[path])

    def _count_step(self, module: nn.Module, inputs: tuple) -> None:
        # A reset network (fresh state) starts at t = 1: the state itself says where we are.
        self._step = 1 if self._probe is None or self._probe.t == 0 else self._step + 1

    def _watch(self, path: str, neuron: MTNeuron) -> str:
        self.sites[path] = record = SiteRecord(path, neuron.levels)
        layer = self.operations  # operations are registered after their input sites
        statistics = SpikeStatistics(neuron)

        def hook(module: MTNeuron, inputs: tuple, x: Tensor) -> None:
            histogram, most = statistics(x)
            histogram = histogram.to(torch.float64)
            spikes = histogram.sum()
            if self._step == 1:
                record.neurons += x.numel()
            _grow(record.spikes, self._step, spikes)
            first = record.histogram is None
            record.histogram = histogram if first else record.histogram + histogram
            record.max_per_neuron = most if first else torch.maximum(record.max_per_neuron, most)
            owner = layer.get(path.rsplit(".", 1)[0])
            if owner is not None and owner.kind == "weight":
                _grow(owner.operations, self._step, spikes * owner.fan_out)
            self._latest[path] = x

        self._hooks.append(neuron.register_forward_hook(hook))
        return path

    def _product_hook(self, path: str):
        previous: dict[str, tuple[Tensor, Tensor]] = {}  # where A(t-1), B(t-1) are non-zero

        def hook(module: SpikingProduct, inputs: tuple, out: Tensor) -> None:
            a, b = self._latest[f"{path}.neuron_a"], self._latest[f"{path}.neuron_b"]
            if self._step == 1 or not module.compensated:  # without EC only a(t)·b(t) is computed
                previous["sums"] = operand_nonzeros(torch.zeros_like(a), torch.zeros_like(b), module.op)
            ops = product_operations(a, b, *previous["sums"], module.op)
            _grow(self.operations[path].operations, self._step, ops)
            if module.compensated:
                previous["sums"] = operand_nonzeros(module.neuron_a.total, module.neuron_b.total, module.op)

        return hook

    def _watch_softmax(self, module: SpikingSoftmax, record: SoftmaxRecord) -> None:
        exp_spikes: list[Tensor] = []  # SI-exp's spikes in the current call
        # per row in float32 (exact: a row has far fewer than 2^24 spikes), then over rows in
        # float64: a float64 sum over every entry costs twice as much (its upcast)
        module.observe = lambda spikes: exp_spikes.append(spikes.sum(module.dim).sum(dtype=torch.float64))

        def hook(module: SpikingSoftmax, inputs: tuple, out: Tensor) -> None:
            if self._step == 1:
                record.elements += out.numel()
            _grow(record.exp_spikes, self._step, exp_spikes.pop())
            # SI-norm's output is its spike count over N: floor(N·w/V_th + 1/2)/N; a row holds about N
            spikes = out * module.spikes_for(out.shape[module.dim])
            spikes = spikes.round().sum(module.dim).sum(dtype=torch.float64)
            _grow(record.norm_spikes, self._step, spikes)

        self._hooks.append(module.register_forward_hook(hook))
        self._observed.append(module)

    def __enter__(self) -> SpikeMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        for module in self._observed:
            module.observe = None
        self._observed.clear()
        self._latest.clear()

    def state(self, time_steps: int) -> dict[str, Tensor]:
        """The records as two vectors: ``sums`` (float64: neurons, spikes and histograms of every
        site, operations, softmax counts; steps not reached count zero) and ``maxima`` (the most
        spikes of one neuron in one step, per site). What processes sum and progress files keep."""
        device = next((r.spikes[0].device for r in self.sites.values() if r.spikes), torch.device("cpu"))

        def steps(series: list[Tensor]) -> Tensor:
            zero = torch.zeros((), dtype=torch.float64, device=device)
            return torch.stack([series[t] if t < len(series) else zero for t in range(time_steps)])

        def count(n: int) -> Tensor:
            return torch.tensor([float(n)], dtype=torch.float64, device=device)

        pieces = [torch.zeros(0, dtype=torch.float64, device=device)]  # a network may have no sites
        for r in self.sites.values():
            histogram = torch.zeros(2, r.levels, dtype=torch.float64) if r.histogram is None else r.histogram
            pieces += [count(r.neurons), steps(r.spikes), histogram.flatten().to(device)]
        pieces += [steps(r.operations) for r in self.operations.values()]
        for r in self.softmaxes.values():
            pieces += [count(r.elements), steps(r.exp_spikes), steps(r.norm_spikes)]
        maxima = [int(r.max_per_neuron or 0) for r in self.sites.values()]
        return dict(sums=torch.cat(pieces), maxima=torch.tensor(maxima, dtype=torch.int64, device=device))

    def load_state(self, state: dict[str, Tensor], time_steps: int) -> None:
        """Replace the records by a :meth:`state` of the same network and ``time_steps``."""
        sizes = [1 + time_steps + 2 * r.levels for r in self.sites.values()]
        sizes += [time_steps] * len(self.operations) + [1 + 2 * time_steps] * len(self.softmaxes)
        sums, maxima = state["sums"], state["maxima"]
        if sums.numel() != sum(sizes) or maxima.numel() != len(self.sites):
            raise ValueError("spike records of another network or another number of steps")
        chunks = iter(sums.split(sizes))
        for record, most in zip(self.sites.values(), maxima, strict=True):
            neurons, spikes, histogram = next(chunks).split([1, time_steps, 2 * record.levels])
            record.neurons, record.spikes = int(neurons.item()), list(spikes)
            record.histogram, record.max_per_neuron = histogram.view(2, record.levels), most
        for record in self.operations.values():
            record.operations = list(next(chunks))
        for record in self.softmaxes.values():
            elements, exp_spikes, norm_spikes = next(chunks).split([1, time_steps, time_steps])
            record.elements = int(elements.item())
            record.exp_spikes, record.norm_spikes = list(exp_spikes), list(norm_spikes)

    def all_reduce(self, time_steps: int) -> None:
        """Sum the records of all processes of a torch.distributed group (max for the maxima)."""
        import torch.distributed as dist

        state = self.state(time_steps)
        dist.all_reduce(state["sums"])
        dist.all_reduce(state["maxima"], op=dist.ReduceOp.MAX)
        self.load_state(state, time_steps)

    def total_spikes(self) -> list[float]:
        """Spikes emitted by all MT neurons, per step."""
        return _sum_series([r.spikes for r in self.sites.values()])

    def total_operations(self) -> list[float]:
        """Synaptic operations (ACs) of weight layers and products, per step."""
        return _sum_series([r.operations for r in self.operations.values()])

    def max_spikes_per_neuron(self) -> int:
        """The largest number of spikes one neuron emitted in one step."""
        return max(
            (int(r.max_per_neuron) for r in self.sites.values() if r.max_per_neuron is not None), default=0
        )

    def neurons(self) -> int:
        """MT neurons, summed over the inputs simulated."""
        return sum(r.neurons for r in self.sites.values())


def _sum_series(series: list[list[Tensor]]) -> list[float]:
    steps = max((len(s) for s in series), default=0)
    return [float(sum(s[t] for s in series if t < len(s))) for t in range(steps)]
