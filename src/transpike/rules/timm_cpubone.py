"""Rules for timm's CPUBone (Nottebaum et al. 2026, "CPUBone: Efficient Vision Backbone Design for
Devices with Low Parallelization Capabilities"; ``cpubone_nano`` to ``cpubone_b3``).

CPUBone is LowFormer's successor (:mod:`.timm_lowformer`) from the same authors: MBConv and fused
MBConv stages, then attention stages whose blocks run LowFormer's attention on a downsampled map
(strided depthwise convolution and BatchNorm, a 1×1 convolution to q, k and v, softmax(q·kᵀ/√d)·v,
an output projection and a transposed convolution or nearest upsampling back, cropped), each after
a one-group GroupNorm, and an MLP of 1×1 convolutions with GELU. With 2×2 kernels
(``small_kernels``) the attention's input is zero-padded to a multiple of its stride first, and
even kernels elsewhere pad left and top (``ZeroPad2d``); both are linear. The head is a 1×1
convolution with BatchNorm and Hardswish, the pool, a Linear with LayerNorm and Hardswish, and the
classifier. The stem's first convolution reads the image, and one rate link runs from it to the
classifier.
"""

from __future__ import annotations

import torch.nn.functional as F
from timm.models import cpubone
from torch import Tensor, nn

from ..compensation import ExpectationCompensation
from . import Link, Role, register
from .links import link_all
from .timm_lowformer import ExplicitConvAttention
from .timm_mobilevit import stage_blocks


class ExplicitCpuBoneAttention(ExplicitConvAttention):
    """timm's CPUBone ``ConvAttention``: LowFormer's (:class:`ExplicitConvAttention`), with the
    input zero-padded to a multiple of the stride where its projection has 2×2 kernels (which would
    round odd sizes down), as timm pads it."""

    def __init__(self, attn: cpubone.ConvAttention) -> None:
        super().__init__(attn)
        self.att_stride, self.small_kernels = attn.att_stride, attn.small_kernels

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        if self.small_kernels and self.att_stride > 1:
            x = F.pad(x, (0, -width % self.att_stride, 0, -height % self.att_stride))
        return super().forward(x)[..., :height, :width]


def _links(model: cpubone.CPUBone) -> list[Link]:
    """One link from the stem to the classifier's Linear (or the head, an EC module when
    ``blocks=k`` leaves it analog); none without a classifier (the output is then a sum)."""
    if isinstance(model.head, ExpectationCompensation):
        return link_all(model, "head")
    return [] if isinstance(model.head.classifier, nn.Identity) else link_all(model, "head.classifier.linear")


register(cpubone.ConvAttention, Role.CONTAINER, twin=ExplicitCpuBoneAttention)
# the stem's first convolution reads the image
register(cpubone.CPUBone, Role.INPUT, links=_links, blocks=stage_blocks)
for cls in (
    ExplicitCpuBoneAttention,
    cpubone.LinearLayer,
    cpubone.ResidualBlock,
    cpubone.ConvLayer,
    cpubone.MBConv,
    cpubone.FusedMBConv,
    cpubone.CPUBoneBlock,
    cpubone.ClsHead,
):
    register(cls, Role.CONTAINER)
