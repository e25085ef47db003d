"""Rules for torch.nn building blocks (its Transformer layers: :mod:`.torch_transformer`)."""

from __future__ import annotations

from torch import nn

from ..sites import Product
from . import Role, register

for cls in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
    register(cls, Role.CONTAINER)

# Linear (affine) and stateless in eval mode: kept as they are. BatchNorm in eval is a per-channel
# affine map; Upsample's interpolation, in every mode, a fixed weighted sum of input pixels;
# Unfold and Fold copy and sum pixels; zero padding adds zeros.
for cls in (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.Flatten,
    nn.Unflatten,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.Upsample,
    nn.Unfold,
    nn.Fold,
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    nn.ZeroPad3d,
):
    register(cls, Role.PASSTHROUGH)

register(nn.Linear, Role.WEIGHT, channel_dims=(-1,))
register(nn.Conv1d, Role.WEIGHT, channel_dims=(-2,))
register(nn.Conv2d, Role.WEIGHT, channel_dims=(-3,))
register(nn.Conv3d, Role.WEIGHT, channel_dims=(-4,))
register(nn.ConvTranspose1d, Role.WEIGHT, channel_dims=(-2,))
register(nn.ConvTranspose2d, Role.WEIGHT, channel_dims=(-3,))
register(nn.ConvTranspose3d, Role.WEIGHT, channel_dims=(-4,))

for cls in (
    nn.GELU,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Softplus,
    nn.Softmax,
    nn.LogSoftmax,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
):
    register(cls, Role.NONLINEAR)

register(Product, Role.PRODUCT)
# a table lookup, no arithmetic: the same rows at every step for the same indices (the position
# ids of transformers' CLIP and SigLIP embeddings, a constant buffer)
register(nn.Embedding, Role.CONSTANT)
