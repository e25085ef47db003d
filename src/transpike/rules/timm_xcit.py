"""Rules for timm's XCiT (``Xcit``: XCiT-N/T/S/M/L, patches of 8 or 16; El-Nouby et al. 2021,
"XCiT: Cross-Covariance Image Transformers").

XCiT is built from parts that convert elsewhere in this package: cross-covariance attention (XCA,
attention over channels with q and k L2-normalized over the tokens and a temperature per head)
is EdgeNeXt's (:mod:`.timm_edgenext`), its class-attention blocks attend as CaiT's
(:mod:`.timm_cait`), and its Fourier position encoding is a constant of the grid's size. New are
the convolutional patch embedding (3×3 convolutions with BatchNorm and GELU; the first sees the
image at every step, the others get MT neurons) and local patch interaction (a depthwise
convolution, GELU, BatchNorm, another depthwise convolution). The class-attention blocks normalize
and update the class token alone (or every token, ``tokens_norm``): slices, concatenations and
LayerScale, all linear. One rate link runs from the patch embedding to the head. ``blocks=k``
counts the XCA blocks, then the class-attention blocks; an XCA block left analog takes the grid
size as a constant.
"""

from __future__ import annotations

from timm.models.xcit import (
    LPI,
    XCA,
    ClassAttentionBlock,
    ClassAttn,
    ConvPatchEmbed,
    PositionalEncodingFourier,
    XCABlock,
    Xcit,
)

from . import Role, register
from .links import to_head
from .timm_cait import ExplicitClassAttn, chained_blocks
from .timm_edgenext import ExplicitCrossCovarianceAttn

register(XCA, Role.CONTAINER, twin=ExplicitCrossCovarianceAttn)
register(ClassAttn, Role.CONTAINER, twin=ExplicitClassAttn)
register(PositionalEncodingFourier, Role.CONSTANT)  # a function of the grid's size
register(ConvPatchEmbed, Role.INPUT)  # its first convolution reads the image
register(Xcit, Role.CONTAINER, links=to_head, blocks=chained_blocks("blocks", "cls_attn_blocks"))
for cls in (LPI, XCABlock, ClassAttentionBlock):
    register(cls, Role.CONTAINER)
