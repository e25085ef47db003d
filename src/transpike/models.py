"""Building the ANN to convert: a timm model by name, with keyword arguments and a checkpoint.

Models are always created with random weights (``pretrained=False``: nothing is downloaded); real
weights come from a checkpoint file the user gives, read without unpickling.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from torch import nn


def create_model(name: str, kwargs: dict | None = None, seed: int = 0) -> nn.Module:
    """``timm.create_model(name, pretrained=False, **kwargs)`` in eval mode, with clear errors.

    The random initial weights come from ``seed`` (without touching the global RNG), so a model
    without a checkpoint is the same in every run and every process.
    """
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown timm model {name!r}{hint}")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return timm.create_model(name, pretrained=False, **(kwargs or {})).eval()
    except (TypeError, ValueError, AssertionError) as error:
        raise ValueError(f"model {name!r} with kwargs {kwargs}: {error}") from None


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, or a torch file read with ``weights_only=True``.

    The state dict may be the file's top level or sit under ``model`` or ``state_dict``;
    a ``module.`` prefix (DistributedDataParallel) is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # whatever fails to parse in an untrusted file, the user sees one error
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ValueError(f"checkpoint {path}: cannot be read safely (weights only): {reason}") from None
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path}: holds no state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a checkpoint into ``model`` (all keys must match)."""
    try:
        model.load_state_dict(read_checkpoint(path))
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path} does not fit the model: {str(error)[:500]}") from None
    return model


def build_model(spec: dict | None, where: str = "") -> nn.Module:
    """The ANN described by a model spec ``{"timm": name, "kwargs": {...}}`` (random weights)."""
    if not spec or "timm" not in spec:
        raise ValueError(
            f"{where}: the network does not say how to build its model; pass the architecture: "
            "transpike.load(path, model=...)"
        )
    return create_model(spec["timm"], spec.get("kwargs"))
