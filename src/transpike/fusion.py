"""One step of a layer of neurons compiled into one kernel (``SpikingModel.fuse``).

Unfused, a neuron's step is a chain of elementwise passes over its memory (about ten for an MT
neuron, three per internal step for SI-exp); ``torch.compile`` turns the same function into one
kernel that reads its inputs and writes its outputs once: Triton on a GPU, C++ on the CPU (a C++
compiler is then needed at run time). Same bits as the unfused step (tested per neuron kind).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from .errors import FusionError


@functools.cache
def _compiled(function: Callable, dynamic: bool):
    import torch._inductor.config as inductor  # here: only fused runs need the compiler loaded

    # Eager division is IEEE-rounded; Triton's default is not (up to 2 ulp), which would move
    # spikes where m/θ lies exactly on a level boundary.
    if not hasattr(inductor, "eager_numerics"):
        raise FusionError(
            f"fused neurons: torch {torch.__version__} cannot compile an IEEE-rounded division "
            "(torch >= 2.11 can); run unfused (SpikingModel.fuse(False), no --fuse)"
        )
    # Triton also contracts a product and a sum into one fused multiply-add (one rounding), which
    # eager kernels do not: t·r - X of a neuron driven by rates would differ. Not on the CPU,
    # where Inductor compiles with -ffp-contract=off.
    options = {"eager_numerics.division_rounding": True, "emulate_precision_casts": True}
    # Each shape, layout and kind of neuron met is one more compilation of the same function;
    # past Dynamo's default limit (8) it would silently run unfused. Raised for the process, once:
    # a patch around every call cost about 40 µs, a fifth of a small neuron's step on the CPU.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 1024)
    return torch.compile(function, dynamic=dynamic, options=options)


def fused(function: Callable, *args, batched: int = 0) -> Tensor | tuple[Tensor, ...]:
    """``function(*args)`` compiled by ``torch.compile`` into one kernel.

    On a GPU shapes are dynamic (one compilation per tensor rank and layout, whatever the batch).
    On the CPU they are fixed, but for the batch: the first dimension of the first ``batched``
    arguments (those that are tensors) is a variable, so that a new batch size (a smaller last
    batch) reuses the kernels rather than compiling them again (seconds each). There a kernel with
    every dimension dynamic measured slower than the unfused step, one with fixed sizes about 2x
    faster (BENCHMARKS.md §3).
    """
    step = _compiled(function, args[0].device.type != "cpu")
    for tensor in args[:batched]:
        if tensor is not None:
            torch._dynamo.maybe_mark_dynamic(tensor, 0)  # a batch of one stays fixed (Dynamo's rule)
    try:
        return step(*args)
    except torch._dynamo.exc.BackendCompilerFailed as error:
        raise FusionError(
            f"fused neurons: torch.compile could not build {function.__name__} on {args[0].device} "
            f"({str(error).splitlines()[0]}); run unfused (SpikingModel.fuse(False), no --fuse)"
        ) from error
