"""Expectation compensation (EC): nonlinear modules and products of two spiking operands.

ECMT (Huang et al., ACM MM 2024), Theorems 4.1 and 4.2. A nonlinear module F applied to each step's
input would give mean_t F(x(t)) ≠ F(mean_t x(t)). EC instead emits

    O(t) = t·F(S(t)/t) - (t-1)·F(S(t-1)/(t-1)),    O(1) = F(x(1)),    S(t) = Σ_{τ≤t} x(τ),

so that Σ_{τ≤t} O(τ) = t·F(S(t)/t): the output rate is F of the input rate at every t. For a
product of two spiking operands with running sums A(t), B(t) the same rule with F = product of the
running means gives Σ O = A(t)·B(t)/t (Theorem 4.2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .neurons import MTNeuron, fire_both
from .state import Stateful


def compensate(mean_now: Tensor, mean_prev: Tensor | None, t: int, out: Tensor | None = None) -> Tensor:
    """EC output O(t) = t·F_t - (t-1)·F_{t-1} from the means F_t = F(S(t)/t) (ECMT eq. 15).

    Written as F_{t-1} + t·(F_t - F_{t-1}), one fused pass (``torch.lerp`` with weight t). Keeping
    the previous mean F_{t-1} in state, not recomputing it, evaluates F once per step (the
    reference code evaluates it twice). For t = 1, O(1) = F_1. ``out`` may be ``mean_prev``
    itself, which is no longer needed once O(t) is known.
    """
    if t == 1 or mean_prev is None:
        return mean_now.clone()
    if out is None:
        return torch.lerp(mean_prev, mean_now, float(t))
    return torch.lerp(mean_prev, mean_now, float(t), out=out)


class ExpectationCompensation(Stateful, nn.Module):
    """EC(F): the nonlinear module F applied to the input rate, emitted as per-step increments.

    F keeps its original parameters (e.g. LayerNorm affine) and is stored as ``self.f``.

    Args:
        f: the nonlinear module (a tensor, perhaps further tensors and constants, in; one tensor out).
        compensated: False gives the ablation "no EC": F applied to each step's input.
        analog: why F was left analog, if it was (no conversion rule with strict=False); it is then
            computed on rates exactly like an EC module, so the network stays correct.

    F may take further tensors besides its input (a module left analog that reads two, such as a
    Transformer decoder's targets and memory): each is kept as a running mean too, so F reads every
    input's rate (a tensor that is the same at every step stays itself). Non-tensor arguments pass
    unchanged.

    Rate hand-over (set by :func:`transpike.rates.link_rates`): with ``takes_rate`` the first input
    is already the rate S(t)/t, as a producer that emits rates gives it, so F reads it directly
    instead of re-averaging increments (links name a reader's first input; further tensors are
    always averaged); with ``emits_rate`` the output is F(S(t)/t) itself, uncompensated, for a
    reader that takes rates (the state F(t-1) and the compensation pass go).
    """

    def __init__(self, f: nn.Module, compensated: bool = True, analog: str | None = None) -> None:
        super().__init__()
        if getattr(f, "inplace", False):
            f.inplace = False  # F reads the running rate, which it must not overwrite
        self.f = f
        self.compensated = compensated
        self.analog = analog
        self.takes_rate = False
        self.emits_rate = False
        self.reset()

    @torch.no_grad()  # state is updated in place: simulation, not training
    def forward(self, x: Tensor, *args: object, **constants: object) -> Tensor:
        """O(t) for the step's input x. Further tensor arguments are averaged like x; other
        arguments and keyword arguments go to F unchanged: they must be the same at every step (an
        analog EVA block's rotary tables and mask flags, an analog XCiT block's grid size)."""
        self.t += 1
        if not self.compensated:
            return self.f(x, *args, **constants)
        # The input rate S(t)/t: the input itself when it is one (takes_rate), else kept as a
        # running mean, one fused pass per step instead of a sum and a division.
        if self.takes_rate:
            rate = x
        elif self.t == 1:
            rate = self.rate = x.clone()
        else:
            rate = self.rate.lerp_(x, 1.0 / self.t)
        others = self._other_rates(args)
        mean_now = self.f(rate, *others, **constants)
        if self.emits_rate:  # read before the rate is next updated (a reader takes it as it is)
            return mean_now
        storage = mean_now.untyped_storage().data_ptr()
        kept = (k for k in (self.rate, *self.others) if k is not None)  # no rate kept under takes_rate
        if any(k.untyped_storage().data_ptr() == storage for k in kept):
            # F returned an input rate or a view of it (Identity, Dropout in eval, x[:, 0]): the
            # mean must not change when the rate is updated in place next step
            mean_now = mean_now.clone()
        out = compensate(mean_now, self.mean, self.t, out=self.mean)
        self.mean = mean_now
        return out

    def _other_rates(self, args: tuple) -> tuple:
        """``args`` with each tensor replaced by its running mean (kept in ``self.others``)."""
        if self.t == 1:
            self.others = [a.clone() if isinstance(a, Tensor) else None for a in args]
        else:
            for kept, a in zip(self.others, args, strict=True):
                if kept is not None:
                    kept.lerp_(a, 1.0 / self.t)
        return tuple(a if kept is None else kept for kept, a in zip(self.others, args, strict=True))

    state_names = ("t", "rate", "mean", "others")

    def reset(self) -> None:
        self.t = 0
        self.rate: Tensor | None = None
        self.mean: Tensor | None = None
        self.others: list[Tensor | None] = []

    def extra_repr(self) -> str:
        return f"compensated={self.compensated}" + (f", analog={self.analog!r}" if self.analog else "")


PRODUCT_OPS = {"matmul": torch.matmul, "mul": torch.mul}


def scaled_product(op: str, a: Tensor, b: Tensor, scale: float) -> Tensor:
    """scale·(a op b). A batched matrix product takes the scale as its GEMM's α (no pass over the
    output, which for Q·Kᵀ is the attention matrix); otherwise it is one more multiplication."""
    if op == "matmul" and a.dim() >= 3 and a.shape[:-2] == b.shape[:-2]:
        flat_a, flat_b = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
        product = torch.baddbmm(a.new_zeros(()), flat_a, flat_b, beta=0.0, alpha=scale)
        return product.view(*a.shape[:-1], b.shape[-1])
    return PRODUCT_OPS[op](a, b).mul_(scale)


class SpikingProduct(Stateful, nn.Module):
    """MT neurons on both operands of a product, followed by the product EC (ECMT Theorem 4.2).

    With a(t), b(t) the operands' spikes and A(t), B(t) their running sums (kept by the operand
    neurons, ``total``), the output is O(t) = A(t)B(t)/t - A(t-1)B(t-1)/(t-1), i.e.
    :func:`compensate` applied to the product of the running means Ā(t)·B̄(t). The paper evaluates
    A(t)B(t) event by event as K_S(t) = K_S(t-1) + a(t)b(t) + a(t)B(t-1) + A(t-1)b(t) (eq. 17-18),
    three sparse products; here the same value comes from one dense product of the running sums
    per step, which is the fast path in simulation (the event-driven operation count is what
    energy accounting reports).

    Args:
        neuron_a, neuron_b: MT neurons on the left and right operand.
        op: "matmul" (Q·Kᵀ, attn·V) or "mul" (elementwise gating).
        scale: constant factor folded into the product (the attention scale d^-1/2).
        compensated: False gives the ablation "no EC": a(t)·b(t)·scale per step.

    ``emits_rate`` (set by :func:`transpike.rates.link_rates`): the output is the rate Ā(t)·B̄(t)
    itself, for a reader that takes rates (the softmax EC after Q·Kᵀ, the neuron before the
    projection after attn·V).
    """

    def __init__(
        self,
        neuron_a: MTNeuron,
        neuron_b: MTNeuron,
        op: str = "matmul",
        scale: float = 1.0,
        compensated: bool = True,
    ) -> None:
        super().__init__()
        self.neuron_a = neuron_a
        self.neuron_b = neuron_b
        # the product EC reads the operands' running sums; only the ablation reads their spikes
        neuron_a.keeps_total = neuron_b.keeps_total = compensated
        neuron_a.spikes_read = neuron_b.spikes_read = not compensated
        self.op = op
        self.scale = float(scale)
        self.compensated = compensated
        self.emits_rate = False
        self.reset()

    @torch.no_grad()  # state is updated in place: simulation, not training
    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        spikes_a, spikes_b = fire_both(self.neuron_a, a, self.neuron_b, b)
        self.t += 1
        if not self.compensated:
            return scaled_product(self.op, spikes_a, spikes_b, self.scale)
        mean_now = scaled_product(self.op, self.neuron_a.total, self.neuron_b.total, self.scale / self.t**2)
        if self.emits_rate:
            return mean_now
        out = compensate(mean_now, self.mean, self.t, out=self.mean)
        self.mean = mean_now
        return out

    state_names = ("t", "mean")

    def reset(self) -> None:
        self.t = 0
        self.mean: Tensor | None = None

    def extra_repr(self) -> str:
        return f"op={self.op}, scale={self.scale:.6g}, compensated={self.compensated}"
