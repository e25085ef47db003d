"""The audit: nonlinear work that a container does itself, outside any module the converter swaps.

Conversion trusts a container (a registered ``CONTAINER`` module) to combine its children
linearly. A forward that calls ``F.relu(x)``, ``x.softmax(-1)`` or ``q @ k.transpose(-2, -1)``
directly would then run per step on spikes, silently wrong. The audit runs the prepared network on
one calibration batch under a dispatch-level op recorder and reports every nonlinear op on an
activation, or product of two activations, whose innermost enclosing module is a container (work
on parameters and buffers alone, e.g. a rotary embedding's tables, is the same at every step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .errors import ConversionError
from .observers import HistogramObserver
from .rules import Role, rule_for
from .sites import Observed, Product, Unconverted

aten = torch.ops.aten
NONLINEAR_OPS = {
    aten.relu, aten.relu_, aten.gelu, aten.silu, aten.sigmoid, aten.tanh, aten._softmax, aten._log_softmax,
    aten.softmax, aten.log_softmax, aten.exp, aten.log, aten.sqrt, aten.rsqrt, aten.pow, aten.abs, aten.amax,
    aten.amin, aten.max, aten.min, aten.maximum, aten.minimum, aten.clamp, aten.clamp_min, aten.clamp_max,
    aten.hardtanh, aten.native_layer_norm, aten.native_group_norm, aten.elu, aten.leaky_relu, aten.softplus,
    aten.mish, aten.hardswish, aten.hardsigmoid, aten.sign, aten.floor, aten.ceil, aten.round, aten.erf,
    aten.sin, aten.cos, aten.reciprocal, aten.sort, aten.topk, aten.median, aten.var, aten.std,
    aten.layer_norm, aten.group_norm, aten.rms_norm,
}  # fmt: skip
# Products that are nonlinear when both operands are activations (not parameters or buffers).
PRODUCT_OPS = {aten.mul, aten.div, aten.matmul, aten.mm, aten.bmm, aten.einsum}


@dataclass(frozen=True)
class Finding:
    """A nonlinear op a container runs itself."""

    path: str
    module: nn.Module
    op: str


class _Recorder(TorchDispatchMode):
    """Records the nonlinear ops that run on activations in a container's own forward.

    A tensor is a constant if its storage is a parameter's or a buffer's, or if an op computed it
    from constants only (a rotary embedding's sin/cos tables, an expanded token): such work is the
    same at every step and needs no conversion. Everything else derives from the input.
    """

    def __init__(self, constants: set[int], exempt: set[nn.Module]) -> None:
        super().__init__()
        self.stack: list[tuple[str, nn.Module]] = []
        self.constants = constants
        self.derived: list[Tensor] = []  # computed constants, kept alive so no activation reuses their memory
        self.exempt = exempt
        self.findings: dict[tuple[str, str], Finding] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [a for a in tree_leaves((args, kwargs)) if isinstance(a, Tensor)]
        activations = [a for a in inputs if self._activation(a)]
        if not activations:
            self._keep(out)
        elif self.stack and self.stack[-1][1] not in self.exempt:
            path, module = self.stack[-1]
            rule = rule_for(module)
            if rule is None or rule.role in (Role.CONTAINER, Role.INPUT):
                packet = func.overloadpacket
                operands = [a for a in activations if a.numel() > 1]
                if packet in NONLINEAR_OPS or (packet in PRODUCT_OPS and len(operands) >= 2):
                    self.findings.setdefault((path, str(packet)), Finding(path, module, str(packet)))
        return out

    def _activation(self, tensor: Tensor) -> bool:
        return tensor.untyped_storage().data_ptr() not in self.constants

    def _keep(self, out: object) -> None:
        for tensor in tree_leaves(out):
            if isinstance(tensor, Tensor):
                self.derived.append(tensor)
                self.constants.add(tensor.untyped_storage().data_ptr())


def _stateful(module: nn.Module) -> bool:
    """Whether the module's converted form keeps state from step to step (an MT neuron's membrane,
    an EC module's running means): a weight layer's site, a product, a nonlinear module, a module
    left analog."""
    if isinstance(module, (Observed, Product, Unconverted)):
        return True
    rule = rule_for(module)
    return rule is not None and rule.role is Role.NONLINEAR


def audit(network: nn.Module, x: Tensor) -> list[Finding]:
    """Run ``network`` on x and list the nonlinear ops its containers run themselves.

    Raises:
        ConversionError: a module that keeps state once converted is called more than once in one
            forward pass: its calls would share one state (a membrane, running means), so each
            use needs a module of its own.
    """
    constants = {t.untyped_storage().data_ptr() for t in [*network.parameters(), *network.buffers()]}
    # transpike's own observers and modules already left analog are not audited
    exempt = {m for m in network.modules() if isinstance(m, HistogramObserver)}
    exempt |= {m for u in network.modules() if isinstance(u, Unconverted) for m in u.modules()}
    recorder = _Recorder(constants, exempt)
    names = {module: path for path, module in network.named_modules()}
    # an analog module's parts are its own business; the analog module itself keeps state
    counted = (m for m in names if _stateful(m) and (m not in exempt or isinstance(m, Unconverted)))
    calls = dict.fromkeys(counted, 0)

    def enter(module: nn.Module, inputs: tuple) -> None:
        recorder.stack.append((names[module], module))
        if module in calls:
            calls[module] += 1

    def leave(module: nn.Module, inputs: tuple, output: object) -> None:
        recorder.stack.pop()

    hooks = [m.register_forward_pre_hook(enter) for m in names] + [
        m.register_forward_hook(leave) for m in names
    ]
    try:
        with torch.inference_mode(), recorder:
            network(x)
    finally:
        for hook in hooks:
            hook.remove()
    for module, count in calls.items():
        if count > 1:
            # named by the user's module, not the site or wrapper transpike put around it
            user = module.layer if isinstance(module, Observed) else module
            raise ConversionError(
                names[module],
                user.module if isinstance(user, Unconverted) else user,
                f"called {count} times in one forward pass; converted, it keeps state from step to "
                "step (a membrane, running means) that its calls would share: give each use a module "
                "of its own",
            )
    return list(recorder.findings.values())
