"""Several tensors as one: what a twin hands a block or stage that takes or returns more than one
tensor (CrossViT's branches, CoaT's scales, TNT's pixels and patches, MobileNetV5's stage outputs,
EfficientViM's map and hidden state), so that ``blocks=k`` can leave it analog: an EC module reads
the rate of each tensor it takes but returns one tensor, and a packed input and output also pass as
one rate link. The layout is a plain concatenation, so rates and increments pack alike."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def pack(tensors: list[Tensor]) -> Tensor:
    """Tensors of one batch, [B, ...] each, as one [B, Σ numel_i / B]."""
    return torch.cat([tensor.flatten(1) for tensor in tensors], dim=1)


def unpack(packed: Tensor, shapes: list[tuple[int, ...]]) -> list[Tensor]:
    """The inverse of :func:`pack`, given each tensor's shape after the batch."""
    parts = packed.split([math.prod(shape) for shape in shapes], dim=1)
    return [part.view(len(packed), *shape) for part, shape in zip(parts, shapes, strict=True)]
