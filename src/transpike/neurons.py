"""Spiking neurons: the multi-threshold (MT) neuron of ECMT and a burst variant.

ECMT (Huang et al., "Towards High-performance Spiking Transformers from ANN to SNN Conversion",
ACM MM 2024, §4.3). Each neuron has n positive levels λ_k = θ1·2^k and n negative levels -θ2·2^k,
k = 0..n-1, where θ1, θ2 > 0 are the smallest levels. Per step t:

    m(t) = v(t-1) + I(t)          charge
    x(t) = MTH(m(t))              fire at most one spike, signed, carrying its level
    v(t) = m(t) - x(t)            reset by subtraction

The firing rule is in :func:`mt_fire` (one pure function); :class:`MTNeuron` only holds θ1, θ2 and
the membrane v. v(0) = 0 as in the paper's Algorithm 1: the half-threshold offset in MTH already
plays the part of the v(0) = θ/2 optimum of the related work (Bu et al., ICLR 2022).

Our generalization: ``per_octave`` s > 1 puts s levels in each octave, λ_k = θ1·2^(k/s), a finer
choice of spike sizes for the same one spike per step.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor, nn

from .fusion import fused
from .state import Stateful

NEURONS = ("mt", "burst")
ROUNDINGS = ("greedy", "nearest")

# Integer view and exponent-field mask per float dtype: clearing the mantissa bits of a positive
# normal float y leaves exactly 2**floor(log2(y)), with no log/exp rounding at level boundaries.
_EXPONENT_MASK = {
    torch.float64: (torch.int64, 0x7FF0000000000000),
    torch.float32: (torch.int32, 0x7F800000),
    torch.float16: (torch.int16, 0x7C00),
    torch.bfloat16: (torch.int16, 0x7F80),
}


def _pow2_floor_(y: Tensor, bits: int = 31) -> Tensor:
    """In place, y <- 2**floor(log2 y) for integer-valued y in [0, 2**(bits-1)] (0 stays 0).

    Eagerly, the mantissa bits are cleared through an integer view (one pass). Compiled for the
    CPU, Inductor would copy every vector lane through memory for that view (it does not
    vectorize a bitcast: half the fused neuron's time), so there the same power of two is found
    on the integer value: setting every bit below the highest one (shift-or steps by 1, 2, 4, ...,
    one per halving of the ``bits`` bits that can be set: three for the eight levels of an MT
    neuron, five for 32 bits) and keeping the highest, y - (y >> 1).
    """
    if torch.compiler.is_compiling() and y.device.type == "cpu":
        bits_set = y.clamp(max=min(2.0 ** (bits - 1), torch.finfo(y.dtype).max)).to(torch.int32)
        shift = 1
        while shift < bits:
            bits_set = bits_set | (bits_set >> shift)
            shift *= 2
        return y.copy_(bits_set - (bits_set >> 1))
    int_dtype, mask = _EXPONENT_MASK[y.dtype]
    y.view(int_dtype).bitwise_and_(mask)
    return y


def _signed_threshold(m: Tensor, theta_pos: Tensor, theta_neg: Tensor, out: Tensor | None) -> Tensor:
    """θ1 where m ≥ 0 and -θ2 where m < 0: the smallest level on m's side, with m's sign.

    Eagerly, s·(θ1+θ2)/2 + (θ1-θ2)/2 with s = ±1 the sign of m (never 0): (θ1+θ2)/2 with m's sign
    (``copysign``, exact), then the sum, two passes and no select (a select with broadcast
    thresholds is several times slower on CPU), exact up to one rounding. Separate in-place
    passes, because ``addcmul`` with two broadcast thresholds falls back to an unvectorized loop
    (8x slower on CPU). Dividing m by it gives |m|/θ directly, and multiplying a level by it
    restores the sign.

    Compiled, the same two values are selected by m < 0: Inductor's C++ calls a library
    ``copysign`` per vector, a third of a fused MT neuron's time on an AVX2 CPU (BENCHMARKS.md §3).
    The spikes are the same but for the sign of a zero spike at m = -0.
    """
    half_sum, half_difference = (theta_pos + theta_neg) / 2, (theta_pos - theta_neg) / 2
    if torch.compiler.is_compiling():
        return torch.where(m < 0, half_difference - half_sum, half_sum + half_difference)
    return torch.copysign(half_sum, m, out=out).add_(half_difference)


def _scaled(
    m: Tensor, theta_pos: Tensor, theta_neg: Tensor, out: Tensor | None, scratch: Tensor | None
) -> tuple[Tensor, Tensor]:
    """(signed θ, |m|/θ + 1/2): the threshold on m's side and m measured in it, offset by the
    half-threshold of the firing rule, written into scratch and out. The 1/2 is added in the
    division's pass (``addcdiv``); in float32 and float64 m/θ is still rounded before the addition,
    as two separate operations would round it, while half-precision dtypes compute the sum in
    float32 and round it once."""
    theta = _signed_threshold(m, theta_pos, theta_neg, scratch)
    half = torch.full((), 0.5, dtype=m.dtype, device=m.device)
    return theta, torch.addcdiv(half, m, theta, out=out)


def top_level(levels: int, neuron: str = "mt", per_octave: int = 1) -> float:
    """The largest multiple of θ one neuron emits in one step: 2^((n-1)/s) (MT: one spike, on the
    top level) or 2^n - 1 (burst: every level at once)."""
    return 2.0 ** ((levels - 1) / per_octave) if neuron == "mt" else 2.0**levels - 1


def _level_floor(y: Tensor, levels: int, per_octave: int) -> Tensor:
    """In place, y <- the largest level 2^(k/s) ≤ y with k ≤ n-1, or 0 where y < 1.

    With s = 1 (ECMT's levels), y is floored and its power of two kept by :func:`_pow2_floor_`:
    exact. With s > 1, k = floor(s·log2 y): a float tie at a level boundary may fall on either
    side, as for the closed form of METHODS.md §2.1.
    """
    if per_octave == 1:
        # capped before the power of two is taken (the same result: the cap is a power of two),
        # so that _pow2_floor_ only meets values up to 2**(n-1)
        return _pow2_floor_(y.floor_().clamp_(max=2.0 ** (levels - 1)), levels)
    k = y.log2_().mul_(per_octave).floor_().clamp_(max=levels - 1)
    return k.masked_fill_(k < 0, -torch.inf).div_(per_octave).exp2_()  # 2^-inf = 0 below θ


def mt_fire(
    m: Tensor,
    theta_pos: Tensor,
    theta_neg: Tensor,
    levels: int,
    rounding: str = "greedy",
    per_octave: int = 1,
    *,
    out: Tensor | None = None,
    scratch: Tensor | None = None,
) -> Tensor:
    """The MT neuron's spike x = MTH_{θ1,θ2,n}(m): at most one spike, signed, carrying its level.

    ECMT eq. (20)-(21). With λ_k = θ1·2^k, the greedy rule (the paper and its code) fires the
    largest k with λ_k - θ1/2 ≤ m, i.e. k = min(n-1, floor(log2((m + θ1/2)/θ1))), and nothing
    when -θ2/2 < m < θ1/2; the negative side mirrors it with θ2. ``rounding="nearest"`` instead
    fires the level closest to m (same firing condition |m| ≥ θ/2): the level boundaries move from
    2^k·θ - θ/2 to the midpoints 1.5·2^(k-1)·θ.

    ``per_octave`` s > 1 spaces the levels s to an octave, λ_k = θ1·2^(k/s) (our generalization:
    one spike per step as in ECMT, a finer choice of its size): the same rules, with the nearest
    rule's midpoints at 2^(k/s)·θ·(1 + 2^(-1/s))/2.

    With s = 1 the level is found without a loop over levels or a logarithm: clearing the mantissa
    bits of floor(|m|/θ + 1/2) leaves the largest power of two below it (0 when |m| < θ/2).

    Args:
        m: membrane potential after charging.
        theta_pos: θ1 > 0, broadcastable to m (scalar per site or one per channel).
        theta_neg: θ2 > 0, same shape as theta_pos.
        levels: n, levels per sign; n = 1 is a plain signed IF neuron.
        rounding: "greedy" or "nearest".
        per_octave: s, levels per octave (1: ECMT's powers of two).
        out, scratch: optional tensors shaped like m to write the result and the signed threshold
            into, so that a neuron reuses its memory from step to step (allocation is slow).

    Returns:
        x with the shape of m: 0 or ±θ·2^(k/s).
    """
    theta, level = _scaled(m, theta_pos, theta_neg, out, scratch)
    if rounding == "nearest":
        # |m|/θ at or above the midpoint below 2^(k/s) iff |m|/θ · 2/(1 + 2^(-1/s)) ≥ 2^(k/s);
        # at least the lowest level where |m| ≥ θ/2 (|m|/θ + 1/2 ≥ 1)
        scale = 2.0 / (1.0 + 2.0 ** (-1.0 / per_octave))
        nearest = _level_floor(torch.div(m, theta).mul_(scale), levels, per_octave)
        level = torch.maximum(nearest, level.ge_(1.0), out=level)
    else:
        level = _level_floor(level, levels, per_octave)
    return level.mul_(theta)


def burst_fire(
    m: Tensor,
    theta_pos: Tensor,
    theta_neg: Tensor,
    levels: int,
    *,
    out: Tensor | None = None,
    scratch: Tensor | None = None,
) -> Tensor:
    """A burst neuron on the MT levels: every level may fire in the same step.

    Burst spikes (Li & Zeng, IJCAI 2022) let a neuron emit several spikes per step. On the MT
    levels θ·2^k, k < n, any integer multiple c·θ with 0 ≤ c ≤ 2^n - 1 is one burst (the binary
    digits of c say which levels fire), so x = sign(m)·θ·min(2^n - 1, floor(|m|/θ + 1/2)): the
    same half-threshold rule as :func:`mt_fire`, up to n spikes per step instead of one. ``out`` and
    ``scratch`` as in :func:`mt_fire`.
    """
    theta, ratio = _scaled(m, theta_pos, theta_neg, out, scratch)
    return ratio.floor_().clamp_(max=2.0**levels - 1).mul_(theta)


def spike_planes(x: Tensor, theta_pos: Tensor, theta_neg: Tensor, levels: int, per_octave: int = 1) -> Tensor:
    """Binary spike trains s_p, one per level, from a neuron output x = Σ_p s_p·λ_p.

    ECMT §4.4: an MT neuron with 2n levels is 2n binary-spike synapse copies. Planes 0..n-1 are the
    positive levels θ1·2^(k/s), planes n..2n-1 the negative levels -θ2·2^(k/s). Works for MT outputs
    (one plane set) and burst outputs (the binary digits of the spike count).

    Returns:
        Tensor of shape [2n, *x.shape] with values in {0, 1}, dtype of x.
    """
    ratio = x / _signed_threshold(x, theta_pos, theta_neg, None)
    shape = (-1, *[1] * x.dim())
    if per_octave == 1:
        count = ratio.round_().to(torch.int64)
        bits = (count.unsqueeze(0) >> torch.arange(levels, device=x.device).view(shape)) & 1
    else:  # one spike on level k = s·log2(|x|/θ); none where x = 0 (k = -inf)
        k = ratio.log2_().mul_(per_octave).round_()
        bits = k.unsqueeze(0) == torch.arange(levels, device=x.device, dtype=k.dtype).view(shape)
    return torch.cat([bits * (x > 0), bits * (x < 0)]).to(x.dtype)


def charge_fire_reset(
    current: Tensor,
    v: Tensor | None,
    total: Tensor | None,
    t: Tensor | float | None,
    theta_pos: Tensor,
    theta_neg: Tensor,
    levels: int,
    rounding: str = "greedy",
    neuron: str = "mt",
    spikes: bool = True,
    per_octave: int = 1,
    *,
    out: Tensor | None = None,
    scratch: Tensor | None = None,
    membrane: Tensor | None = None,
) -> Tensor | None:
    """One step of a layer of neurons, in place on its state (ECMT eq. 19-21). Returns x, or
    None with ``spikes=False`` (compiled, x is then never written: a reader of ``total`` only).

    Driven by increments (``t`` is None): m = v + I (charge), x = MTH(m) (fire: :func:`mt_fire`
    or :func:`burst_fire`), v <- m - x (reset by subtraction).

    Driven by rates (``t`` given, no ``v``): the input is the rate r(t) = S(t)/t of the current,
    S(t) = Σ_{τ≤t} I(τ), and m = t·r(t) - X(t-1), with X = ``total`` the sum of the neuron's own
    spikes: the same m, since v(t-1) = S(t-1) - X(t-1). No membrane is kept; ``membrane`` is
    where m is written, if given.

    With ``total`` given, X <- X + x (the running sum A(t) of a product operand, or what a layer
    that hands on rates reads). ``per_octave``, ``out`` and ``scratch`` as in :func:`mt_fire`.
    :func:`transpike.fusion.fused` compiles this same function, with no buffers: the compiler keeps
    m and θ in registers instead.
    """
    # driven by rates, t·r is rounded before X is subtracted, compiled or not (no fused
    # multiply-add: fusion.py)
    m = v.add_(current) if t is None else torch.mul(current, t, out=membrane).sub_(total)
    if neuron == "burst":
        x = burst_fire(m, theta_pos, theta_neg, levels, out=out, scratch=scratch)
    else:
        x = mt_fire(m, theta_pos, theta_neg, levels, rounding, per_octave, out=out, scratch=scratch)
    if v is not None:
        v.sub_(x)
    if total is not None:
        total.add_(x)
    return x if spikes else None


_workspace = threading.local()


def _scratch_like(x: Tensor, slot: int = 0) -> Tensor:
    """Scratch memory shaped like x, shared by all neurons of this thread: it only lives during one
    firing, so one buffer per thread serves the whole network instead of one per neuron. Slot 0
    holds the signed threshold, slot 1 the membrane of a neuron driven by rates."""
    buffer = getattr(_workspace, "buffer", None)
    if (
        buffer is None
        or buffer.shape[1] < x.numel()
        or (buffer.dtype, buffer.device) != (x.dtype, x.device)
        or buffer.is_inference() != torch.is_inference_mode_enabled()
    ):
        buffer = _workspace.buffer = torch.empty(2, x.numel(), dtype=x.dtype, device=x.device)
    return buffer[slot, : x.numel()].view(x.shape)


def scratch_buffer() -> Tensor | None:
    """This thread's scratch memory (see :func:`_scratch_like`), if any. A CUDA graph that replays
    firings writes to it, so it must keep it allocated even when a larger input replaces it."""
    return getattr(_workspace, "buffer", None)


def _state_like(current: Tensor) -> Tensor:
    """Zeros for a neuron's membrane or spike sum: contiguous, or, for a transposed input (the
    attention's kᵀ, whose second-last dimension is the unit-stride one), the transpose of a
    contiguous tensor. Charging then walks input and state along the same dimension, and the
    product reads the state as a batch of transposed matrices, which its GEMM takes without a copy.
    """
    transposed = current.dim() >= 2 and current.stride(-1) != 1 and current.stride(-2) == 1
    if transposed:
        current = current.transpose(-2, -1)
    state = torch.zeros_like(current, memory_format=torch.contiguous_format)
    return state.transpose(-2, -1) if transposed else state


class MTNeuron(Stateful, nn.Module):
    """A layer of MT (or burst) neurons with thresholds θ1, θ2 and its state.

    Input: the current I(t) of one step; output: x(t) (see :func:`mt_fire`, whose ``per_octave``
    spaces the levels s to an octave). State starts at v(0) = 0 and is cleared by :meth:`reset`.

    ``takes_rate`` (set by :func:`transpike.rates.link_rates`): the input is the rate of the
    current instead, as an EC module, a product EC or a layer that hands on rates gives it before
    compensation; the neuron then keeps the sum X of its own spikes instead of a membrane (see
    :func:`charge_fire_reset`): the same spikes, up to rounding, without the producer's
    compensation pass and state. ``keeps_total``: X is kept in ``total`` also when driven by
    increments (a product's operand, whose running sum it is). ``spikes_read`` False: the readers
    only read ``total`` (a product EC, a layer that hands on rates), so a fused step does not write
    the spikes and returns None, unless a forward hook (a spike monitor) is there to see them.
    """

    def __init__(
        self,
        theta_pos: Tensor,
        theta_neg: Tensor,
        levels: int = 8,
        rounding: str = "greedy",
        neuron: str = "mt",
        per_octave: int = 1,
    ) -> None:
        super().__init__()
        if neuron not in NEURONS:
            raise ValueError(f"neuron must be one of {NEURONS}, got {neuron!r}")
        if isinstance(per_octave, bool) or not isinstance(per_octave, int) or per_octave < 1:
            raise ValueError(f"per_octave must be an integer >= 1, got {per_octave!r}")
        if neuron == "burst" and per_octave != 1:
            raise ValueError("the burst neuron's levels are binary digits: per_octave must be 1")
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
        self.register_buffer("theta_pos", torch.as_tensor(theta_pos, dtype=torch.float32).clone())
        self.register_buffer("theta_neg", torch.as_tensor(theta_neg, dtype=torch.float32).clone())
        if not (self.theta_pos > 0).all() or not (self.theta_neg > 0).all():
            raise ValueError("thresholds theta_pos and theta_neg must be > 0")
        self.levels = int(levels)
        self.rounding = rounding
        self.neuron = neuron
        self.per_octave = per_octave
        self.takes_rate = False
        self.keeps_total = False
        self.spikes_read = True
        self.fused = False  # see transpike.fusion; a simulation setting, not saved
        self.reset()

    def _begin(self, current: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor], int | None]:
        """Count the step, make the state at the first: (state, θ1 and θ2 in the input's dtype, t
        for a neuron driven by rates, else None)."""
        self.t += 1
        if self.t == 1:
            if not self.takes_rate:
                self.v = _state_like(current)
            if self.takes_rate or self.keeps_total:
                self.total = _state_like(current)
        theta = self.theta_pos, self.theta_neg
        if self.theta_pos.dtype != current.dtype:  # a float64 network: a conversion per step
            theta = self.theta_pos.to(current.dtype), self.theta_neg.to(current.dtype)
        return self.total if self.takes_rate else self.v, theta, self.t if self.takes_rate else None

    def _compiled_arguments(self, current: Tensor, spikes: bool) -> tuple[tuple, tuple]:
        """One step's :func:`charge_fire_reset` arguments for the compiled kernel: the tensors with
        a batch dimension (input, membrane, spike sum), and the rest."""
        _, theta, t = self._begin(current)
        if t is not None:  # a tensor: a number would be compiled in, once per step
            t = torch.full((), t, dtype=current.dtype, device=current.device)
        rest = (t, *theta, self.levels, self.rounding, self.neuron, spikes, self.per_octave)
        return (current, self.v, self.total), rest

    @torch.no_grad()  # state is updated in place: simulation, not training
    def forward(self, current: Tensor) -> Tensor | None:
        """One step: charge, fire, reset by subtraction. Returns the spikes (a tensor that may be
        reused next step), or None when fused and nobody reads them (``spikes_read``)."""
        if self.fused:
            batched, rest = self._compiled_arguments(current, self.spikes_read or bool(self._forward_hooks))
            return fused(charge_fire_reset, *batched, *rest, batched=3)
        state, theta, t = self._begin(current)
        if self._out is None:
            self._out = torch.empty_like(state)
        return charge_fire_reset(
            current,
            self.v,
            self.total,
            t,
            *theta,
            self.levels,
            self.rounding,
            self.neuron,
            True,
            self.per_octave,
            out=self._out,
            scratch=_scratch_like(state),
            membrane=_scratch_like(state, 1) if t is not None else None,
        )

    state_names = ("t", "v", "total", "_out")

    def reset(self) -> None:
        self.t = 0
        self.v: Tensor | None = None
        self.total: Tensor | None = None
        self._out: Tensor | None = None

    def extra_repr(self) -> str:
        shape = tuple(self.theta_pos.shape) or "tensor"
        rate = ", takes_rate=True" if self.takes_rate else ""
        octave = f", per_octave={self.per_octave}" if self.per_octave != 1 else ""
        return (
            f"levels={self.levels}{octave}, neuron={self.neuron}, rounding={self.rounding}, "
            f"thresholds={shape}{rate}"
        )


def _charge_fire_reset_both(
    current_a: Tensor,
    v_a: Tensor | None,
    total_a: Tensor | None,
    current_b: Tensor,
    v_b: Tensor | None,
    total_b: Tensor | None,
    *rest: object,
) -> None:
    """:func:`charge_fire_reset` of two neurons, compiled as one call (see :func:`fire_both`);
    ``rest`` holds the first neuron's remaining arguments, then the second's (flat: Dynamo checks
    flat arguments faster than tuples)."""
    half = len(rest) // 2
    charge_fire_reset(current_a, v_a, total_a, *rest[:half])
    charge_fire_reset(current_b, v_b, total_b, *rest[half:])


def fire_both(first: MTNeuron, a: Tensor, second: MTNeuron, b: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """One step of two neurons on a and b (a product's operands): ``first(a), second(b)``.

    Fused neurons whose spikes nobody reads (``spikes_read`` False) and nobody observes (no
    hooks: a spike monitor, an energy count) step in one compiled call and return None: a
    compiled call costs about 100 µs before its kernel runs on the CPU, and a ViT's products
    would pay it 24 more times per step (BENCHMARKS.md §3). The same spikes and sums either way.
    Called from :meth:`SpikingProduct.forward`, which already runs without autograd.
    """

    def quiet(neuron: MTNeuron) -> bool:
        return neuron.fused and not (neuron.spikes_read or neuron._forward_hooks or neuron._forward_pre_hooks)

    if not (quiet(first) and quiet(second)):
        return first(a), second(b)
    batched_a, rest_a = first._compiled_arguments(a, False)
    batched_b, rest_b = second._compiled_arguments(b, False)
    fused(_charge_fire_reset_both, *batched_a, *batched_b, *rest_a, *rest_b, batched=6)
    return None, None
