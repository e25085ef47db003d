"""Rules for torchvision's Vision Transformer (``torchvision.models.VisionTransformer``: ViT-B/16,
B/32, L/16, L/32, H/14, and the conv-stem variant), the model SpikingJelly's converters take.

Its convolutional patch projection (or a conv stem's first convolution) sees the image at every
step (direct coding, as a timm ViT's patch embedding does); every later weight layer gets an MT
neuron, LayerNorm, GELU, the pre-logits Tanh and a conv stem's BatchNorm-and-ReLU become EC
modules, and each ``nn.MultiheadAttention`` is swapped for its explicit twin
(:class:`~transpike.rules.torch_transformer.ExplicitMultiheadAttention`). The class token, the position
embedding, the residual sums and the class-token selection are linear and the same at every step,
so the whole network is one container from the image to the head, and every converted module
passes rates (:mod:`transpike.rules.links`). ``blocks=k`` counts ``encoder.layers``.
"""

from __future__ import annotations

from torchvision.models.vision_transformer import Encoder, EncoderBlock, MLPBlock, VisionTransformer
from torchvision.ops.misc import Conv2dNormActivation

from ..compensation import ExpectationCompensation
from . import Link, Role, register
from .links import link_all


def _network_links(vit: VisionTransformer) -> list[Link]:
    """One link from the patch projection to the head's last Linear (or to the heads, left analog
    by ``blocks=k``), which emits the increments the simulation averages."""
    return link_all(vit, "heads" if isinstance(vit.heads, ExpectationCompensation) else "heads.head")


register(VisionTransformer, Role.INPUT, links=_network_links)  # conv_proj reads the image
for cls in (Encoder, EncoderBlock, MLPBlock, Conv2dNormActivation):
    register(cls, Role.CONTAINER)
