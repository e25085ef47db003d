"""Rules for timm's ViTamin (Chen et al. 2024, "ViTamin: Designing Scalable Vision Models in the
Vision-Language Era"; ``vitamin_*``: S to XL, at 224 to 384 px).

A ViTamin is timm's ``VisionTransformer`` behind a hybrid embedding whose backbone is two stages
of MBConv blocks with LayerNorm (pre-norm, GELU, a residual sum), and whose MLPs are GeGLU:
GELU(W0·x̂)·(W1·x̂) after a LayerNorm of their own, a product of two spiking operands (the twin).
The stem's first convolution reads the image; the embedding's and the ViT's rate links are those
of a hybrid ViT (:mod:`.timm_cnn`, :mod:`.timm_vit`).
"""

from __future__ import annotations

from timm.models import vitamin
from torch import Tensor, nn

from ..sites import Product
from . import Role, register


class ExplicitGeGluMlp(nn.Module):
    """timm's ViTamin ``GeGluMlp`` with its gating product as a module: W2·(GELU(W0·x̂) ⊙ W1·x̂),
    x̂ = LayerNorm(x) (Shazeer 2020, "GLU Variants Improve Transformer", eq. 6). Shares the
    original's submodules under their names."""

    # what reads the MLP's input and what writes its output (the block's rate links)
    input_layers, output_layer = ("norm",), "w2"

    def __init__(self, mlp: vitamin.GeGluMlp) -> None:
        super().__init__()
        self.norm, self.w0, self.act, self.w1 = mlp.norm, mlp.w0, mlp.act, mlp.w1
        self.gating = Product("mul", channels_a=(-1,), channels_b=(-1,))
        self.drop1, self.w2, self.drop2 = mlp.drop1, mlp.w2, mlp.drop2

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        return self.drop2(self.w2(self.drop1(self.gating(self.act(self.w0(x)), self.w1(x)))))


def _geglu_links(mlp: ExplicitGeGluMlp) -> list:
    """ExplicitGeGluMlp.forward: the norm feeds both Linears; W0 its activation, which is one
    factor, W1 the other; the product W2."""
    return [
        ("norm", ("w0", "w1")),
        ("w0", ("act",)),
        ("act", ("gating.neuron_a",)),
        ("w1", ("gating.neuron_b",)),
        ("gating", ("w2",)),
    ]


register(vitamin.GeGluMlp, Role.CONTAINER, twin=ExplicitGeGluMlp)
register(ExplicitGeGluMlp, Role.CONTAINER, links=_geglu_links)
for cls in (vitamin.Stem, vitamin.Downsample2d, vitamin.StridedConv, vitamin.MbConvLNBlock):
    register(cls, Role.CONTAINER)
register(vitamin.MbConvStages, Role.CONTAINER)  # the hybrid embedding's backbone
