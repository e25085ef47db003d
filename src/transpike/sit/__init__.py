"""SIT-conversion's spiking softmax: SI-exp and SI-norm neurons (Wang et al., preprint 2024).

``Spiking_Softmax(x)_i = exp_i(x_i) / norm(Σ_j exp_j(x_j))``.

**SI-exp** (an FS-style neuron, Stöckl & Maass 2021) runs K internal steps with fitted parameters
threshold T(t), reset h(t) and output weight d(t). With v(1) = x:

    z(t) = Θ(v(t) - T(t)),    v(t+1) = v(t) - h(t)·z(t),    exp(x) ≈ Σ_t d(t)·z(t).

The same function, :func:`fs_neuron`, runs the fit (with a surrogate gradient for Θ) and inference, so
the reset is applied in the same order in both; the FS-neuron authors' training script shifts h by
one step relative to their inference code, which ruins a fit used the other way.

**SI-norm** divides by spikes: a regular spike train encoding 1.0 over N steps charges the neuron by
w = exp_i per step against the threshold V_th = Σ_j exp_j, with reset by subtraction; it fires
floor(N·w/V_th + 1/2) spikes, read out over N (the paper's "N_spike" shortcut charges all N steps
at once, which :func:`si_norm` computes in closed form). The neuron starts half charged, v(0) =
V_th/2, where the paper starts at 0: its count is then N·w/V_th rounded, not floored, unbiased and
within 1/(2N), so about a quarter of the N gives the same network error (BENCHMARKS.md §5); each
output spike costs an accumulate, so N sets SI-norm's energy (:mod:`transpike.energy`). By default
N is about 256 × the row length n (:func:`default_norm_spikes`), where the network's error stops
improving (it did from 60-330 × n in BENCHMARKS.md §5), so short rows do not pay for the N long
ones need.

The paper fits SI-exp on [-1, 1] and inserts a Sigmoid before softmax (then fine-tunes) when the
attention logits leave that range. Softmax is shift-invariant, so :class:`SpikingSoftmax`
subtracts each row's maximum by default and uses an SI-exp fitted on [-R, 0], which handles any
logits without fine-tuning; the paper's two forms are options.

Fitted parameters for K = 4..16, 20, 24, 28 and 32 ship in ``data/si_exp.json``; ``python -m
transpike.sit fit`` reproduces them (seeded; see :mod:`transpike.sit.fit`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from functools import cache
from importlib import resources

import torch
from torch import Tensor, nn

from ..fusion import fused

PAPER_RANGE = (-1.0, 1.0)
SHIFTED_RANGE = (-12.0, 0.0)  # e^-12 = 6e-6: below it exp is zero for softmax's purpose
FIT_POINTS = 10_000
MODES = ("shift", "clip", "sigmoid")
NORM_SPIKES_PER_ENTRY = 256  # SI-norm's default N over the row length, before rounding


def heaviside(v: Tensor, threshold: Tensor) -> Tensor:
    """Θ(v - T): 1 where v ≥ T, in v's dtype.

    The comparison writes straight into a float tensor: in IEEE arithmetic v - T ≥ 0 exactly when
    v ≥ T, and a bool result converted afterwards costs ten times as much on CPU (2.0 against
    0.2 ms on an attention-sized tensor).
    """
    return torch.ge(v, threshold, out=torch.empty_like(v))


class _SurrogateSpike(torch.autograd.Function):
    """Θ(v - T) forward; FS-neuron surrogate gradient max(0, 1 - |v - T|/(|v| + 1)) backward."""

    @staticmethod
    def forward(ctx, v: Tensor, threshold: Tensor) -> Tensor:
        ctx.save_for_backward(v, threshold)
        return heaviside(v, threshold)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        v, threshold = ctx.saved_tensors
        slope = (1 - (v - threshold).abs() / (v.abs() + 1)).clamp(min=0) * grad
        return slope, -slope.sum_to_size(threshold.shape)


def _own(tensor: Tensor, owned: bool) -> Tensor | None:
    """``tensor`` as the ``out=`` of its own update when that is safe: it was made here (it is not
    the caller's input) and autograd is off (inference). Updating in place saves an allocation
    per internal step, which on CPU costs as much as the arithmetic."""
    return tensor if owned and not torch.is_grad_enabled() else None


def fs_trains(x: Tensor, threshold: Tensor, reset: Tensor, spike: Callable | None = None) -> Iterator[Tensor]:
    """The FS-neuron dynamics of SI-exp, one spike train z(t) per internal step t = 1..K:
    z(t) = Θ(v(t) - T(t)), v(t+1) = v(t) - h(t)·z(t), with v(1) = x.

    Fitting and inference both run these dynamics, so their reset ordering is the same.

    Args:
        x: input (any shape).
        threshold, reset: T, h, each of length K.
        spike: Θ(v, T); the surrogate-gradient spike during fitting, Θ otherwise.
    """
    v = x
    for t in range(threshold.shape[0]):  # the neuron's own K internal time steps
        z = (spike or heaviside)(v, threshold[t])
        # v - h·z in one pass: h·z is exact (z is 0 or 1), so the one rounding is the subtraction's.
        # In place once v is no longer the caller's x, unless autograd needs v's history.
        v = torch.addcmul(v, z, reset[t], value=-1, out=_own(v, t > 0))
        yield z


def fs_neuron(
    x: Tensor,
    threshold: Tensor,
    reset: Tensor,
    weight: Tensor,
    spike: Callable | None = None,
    observe: Callable[[Tensor], None] | None = None,
) -> Tensor:
    """SI-exp's output Σ_t d(t)·z(t) over the spike trains of :func:`fs_trains` (weights d = ``weight``).

    As x grows the spike pattern changes only by its first changing step going 0 → 1, so the output
    is a staircase of at most 2^K pieces, whatever T, h and d: what bounds its error from below
    (``benchmarks/si_exp_bound.py``). ``observe``, if given, sees each spike train z(t).
    """
    out = torch.zeros_like(x)
    for d, z in zip(weight, fs_trains(x, threshold, reset, spike), strict=True):
        if observe is not None:
            observe(z)
        out = torch.addcmul(out, z, d, out=_own(out, True))  # out + d·z, exact product as in fs_trains
    return out


def fs_counted(x: Tensor, threshold: Tensor, reset: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`fs_neuron`'s output and its spikes per entry, Σ_t z(t), in one pass (one kernel when
    fused), for a spike monitor."""
    spikes = torch.zeros_like(x)
    return fs_neuron(x, threshold, reset, weight, observe=spikes.add_), spikes


def fs_spikes(x: Tensor, threshold: Tensor, reset: Tensor) -> Tensor:
    """The spike trains of :func:`fs_trains` stacked, [..., K] (for least-squares weights)."""
    return torch.stack(list(fs_trains(x, threshold, reset)), dim=-1)


def si_exp(x: Tensor, K: int = 12, fit: str = "paper") -> Tensor:
    """exp(x) by an SI-exp neuron with K internal steps and the shipped fitted T, h, d.

    Args:
        x: input; ``fit="paper"`` is fitted on [-1, 1], ``fit="shifted"`` on [-12, 0].
    """
    params = fitted_parameters(K, shifted=fit == "shifted")
    T, h, d = (torch.tensor(params[name], dtype=x.dtype, device=x.device) for name in ("T", "h", "d"))
    return fs_neuron(x, T, h, d)


def si_norm(weight: Tensor, v_th: Tensor, spikes: int) -> Tensor:
    """SI-norm's read-out floor(N·w/V_th + 1/2)/N: an IF neuron charged by w for N steps against V_th.

    With v(0) = V_th/2 and reset by subtraction, N steps of constant input w give exactly
    floor(N·w/V_th + 1/2) output spikes (the paper's "N_spike" shortcut charges them at once; its
    v(0) = 0 floors instead, a bias of -1/(2N) per entry).
    """
    return torch.floor(spikes * weight / v_th + 0.5) / spikes


def default_norm_spikes(row: int) -> int:
    """SI-norm's default N for softmax rows of ``row`` entries: 256·row rounded to the nearest
    power of two, 2^round(log2(256·row)) (2^12 for rows of 17, 2^16 for rows of 197).

    A power of two keeps SI-norm's output count/N exact in floating point.
    """
    return 2 ** round(math.log2(NORM_SPIKES_PER_ENTRY * row))


@cache
def shipped_fits(shifted: bool = True) -> dict[int, dict]:
    """The shipped SI-exp fits by K, on [-12, 0] (``shifted``) or on [-1, 1] (the paper)."""
    table = json.loads(resources.files("transpike").joinpath("data/si_exp.json").read_text())
    return {fit["K"]: fit for fit in table["shifted" if shifted else "paper"]}


def fitted_parameters(steps: int, shifted: bool = True) -> dict:
    """The shipped SI-exp fit for K = ``steps`` on [-12, 0] (``shifted``) or on [-1, 1] (the paper)."""
    fits = shipped_fits(shifted)
    if steps not in fits:
        raise ValueError(f"no fitted SI-exp for K={steps}; shipped: K in {sorted(fits)}")
    return fits[steps]


class SpikingSoftmax(nn.Module):
    """Softmax computed by SI-exp and SI-norm neurons along ``dim``.

    Args:
        dim: the softmax dimension.
        steps: K, SI-exp's internal steps.
        mode: "shift" (default): subtract each row's maximum, SI-exp fitted on [-12, 0];
            "clip": the paper as stated, SI-exp fitted on [-1, 1] on inputs clamped to [-1, 1];
            "sigmoid": the paper's variant for models whose logits leave [-1, 1], SI-exp of
            Sigmoid(x), i.e. softmax(sigmoid(x)): equal to the ANN only if it was fine-tuned so.
        norm_spikes: N, SI-norm's spike-train length (output resolution 1/N); None: from the row
            length, see :func:`default_norm_spikes`.
    """

    def __init__(
        self, dim: int = -1, steps: int = 12, mode: str = "shift", norm_spikes: int | None = None
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"sit mode must be one of {MODES}, got {mode!r}")
        fit = fitted_parameters(steps, shifted=mode == "shift")
        for name in ("T", "h", "d"):
            self.register_buffer(name, torch.tensor(fit[name], dtype=torch.float32))
        self.dim, self.steps, self.mode, self.norm_spikes = dim, steps, mode, norm_spikes
        self.fused = False  # SI-exp's K internal steps as one kernel (transpike.fusion); not saved
        self.observe: Callable[[Tensor], None] | None = None  # sees SI-exp's spikes per entry; not saved

    def exp_input(self, x: Tensor) -> Tensor:
        """What the SI-exp neurons receive (``mode``): x less its row maximum, x clamped to
        [-1, 1], or Sigmoid(x)."""
        if self.mode == "shift":
            return x - x.amax(self.dim, keepdim=True)
        if self.mode == "clip":
            return x.clamp(*PAPER_RANGE)
        return torch.sigmoid(x)

    def spikes_for(self, row: int) -> int:
        """N for rows of ``row`` entries: ``norm_spikes``, or if that is None,
        :func:`default_norm_spikes`."""
        return self.norm_spikes or default_norm_spikes(row)

    def forward(self, x: Tensor) -> Tensor:
        x = self.exp_input(x)
        T, h, d = (p.to(x.dtype) for p in (self.T, self.h, self.d))
        neuron = fs_neuron if self.observe is None else fs_counted
        # fused or not, the same bits (tests/test_sit.py)
        exp = fused(neuron, x, T, h, d, batched=1) if self.fused else neuron(x, T, h, d)
        if self.observe is not None:
            exp, spikes = exp
            self.observe(spikes)
        return si_norm(exp, exp.sum(self.dim, keepdim=True), self.spikes_for(x.shape[self.dim]))

    def extra_repr(self) -> str:
        norm = self.norm_spikes or "auto"  # from the row length
        return f"dim={self.dim}, steps={self.steps}, mode={self.mode}, norm_spikes={norm}"


def spiking_softmax(
    x: Tensor, dim: int = -1, K: int = 12, mode: str = "shift", norm_spikes: int | None = None
) -> Tensor:
    """Softmax of x along ``dim`` by SI-exp (K steps) and SI-norm neurons; see :class:`SpikingSoftmax`."""
    return SpikingSoftmax(dim, K, mode, norm_spikes).to(x.device)(x)
