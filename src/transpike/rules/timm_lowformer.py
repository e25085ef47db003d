"""Rules for timm's LowFormer (Nottebaum et al. 2025, "LowFormer: Hardware Efficient Design for
Convolutional Transformer Backbones"; ``lowformer_b0`` to ``b3`` and ``e1`` to ``e3``).

Its attention runs on a downsampled map: a strided depthwise convolution with BatchNorm and a 1×1
convolution give q, k and v per head; softmax(q·kᵀ/√d)·v over the small map's pixels, a 1×1 output
projection (or none, fused into the upsampling) and a transposed convolution back to the input's
size, cropped. The twin makes Q·Kᵀ and attn·V products of spiking operands with their EC and the
softmax an EC module; the transposed convolution is a weight layer. The rest is a ConvNet's
(MBConv and fused MBConv blocks with BatchNorm, Hardswish and GELU as EC modules, GroupNorm of one
group before the attention and the MLP), and the head's convolution, pool, Linear, LayerNorm and
Hardswish lead to the classifier. The stem's first convolution reads the image, and one rate link
runs from it to the classifier.
"""

from __future__ import annotations

from timm.models import lowformer
from torch import Tensor

from . import Link, Role, register
from .links import link_all
from .timm_mobilevit import stage_blocks
from .timm_twins import SoftmaxHeads


class ExplicitConvAttention(SoftmaxHeads):
    """timm's LowFormer ``ConvAttention`` with Q·Kᵀ, softmax and attn·V as modules, q, k and v laid
    out [B, heads, pixels, head_dim]. Shares the original's submodules under their names."""

    def __init__(self, attn: lowformer.ConvAttention) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.o_proj_inpdim = attn.num_heads, attn.head_dim, attn.o_proj_inpdim
        self.conv_proj, self.pwise = attn.conv_proj, attn.pwise
        self.o_proj, self.upsampling = attn.o_proj, attn.upsampling
        self._init_heads(attn)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        qkv = self.pwise(self.conv_proj(x))
        batch, _, h, w = qkv.shape
        q, k, v = (
            qkv.reshape(batch, self.num_heads, 3 * self.head_dim, h * w).transpose(-1, -2).chunk(3, dim=3)
        )
        out = self.heads(q, k, v).transpose(-1, -2).reshape(batch, self.o_proj_inpdim, h, w)
        return self.upsampling(self.o_proj(out))[..., :height, :width]


def _links(model: lowformer.LowFormer) -> list[Link]:
    """One link from the stem to the classifier (a Linear, or an EC module when ``blocks=k``
    leaves the head analog)."""
    return link_all(model, "classifier")


register(lowformer.ConvAttention, Role.CONTAINER, twin=ExplicitConvAttention)
# the stem's first convolution reads the image
register(lowformer.LowFormer, Role.INPUT, links=_links, blocks=stage_blocks)
for cls in (
    ExplicitConvAttention,
    lowformer.ResidualBlock,
    lowformer.ConvLayer,
    lowformer.MBConv,
    lowformer.FusedMBConv,
    lowformer.LowFormerBlock,
):
    register(cls, Role.CONTAINER)
