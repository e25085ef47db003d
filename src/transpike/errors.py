"""Errors raised by transpike."""

from __future__ import annotations

from torch import nn


def type_name(module: nn.Module) -> str:
    """The module's class with the module that defines it (``timm.models.cait.Cait``)."""
    return f"{type(module).__module__}.{type(module).__qualname__}"


class ConversionError(ValueError):
    """A module the converter cannot handle, named by its path in the model and its type."""

    def __init__(self, path: str, module: nn.Module, reason: str) -> None:
        self.path = path or "<root>"
        self.module_type = type_name(module)
        super().__init__(f"{self.path} ({self.module_type}): {reason}")


class FusionError(RuntimeError):
    """``torch.compile`` could not build the fused neuron step (:meth:`SpikingModel.fuse`)."""


class GraphError(RuntimeError):
    """A step could not run as a CUDA graph (:meth:`SpikingModel.graph`)."""
