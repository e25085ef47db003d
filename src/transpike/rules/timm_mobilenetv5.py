"""Rules for timm's MobileNetV5 (``mobilenetv5_300m``, ``mobilenetv5_base`` and the ``_enc``
encoders: the vision tower of Gemma 3n), MobileNetV4's blocks with RMS norms.

The stages are MobileNetV4's fused and universal inverted residuals and mobile multi-query
attention (:mod:`.timm_mobilenetv4`), normed by ``RmsNorm2d`` (with its activation,
``RmsNormAct2d``): EC modules. The multi-scale fusion adapter resizes the outputs of the last
stages to the largest map (nearest: linear), joins them by channel, runs a universal inverted
residual over them, pools to its output resolution (average or bilinear: linear) and norms: a
container. timm hands it a list of stage outputs; converted, the model hands it them packed into
one tensor, with their shapes as constants, so that ``blocks=k`` (which counts every stage's
blocks in turn) can leave it analog. The stem's convolution reads the image; one rate link runs
from it to the classifier (none in the encoders, whose output is the adapter's map).
"""

from __future__ import annotations

from timm.layers import RmsNorm2d
from timm.models.mobilenetv5 import MobileNetV5, MobileNetV5Encoder, MobileNetV5MultiScaleFusionAdapter
from torch import Size, Tensor, nn

from . import Role, register
from .packing import pack, unpack
from .timm_mobilenetv4 import network_links, stage_blocks


class JoinedFusionAdapter(MobileNetV5MultiScaleFusionAdapter):
    """timm ``MobileNetV5MultiScaleFusionAdapter`` reading its inputs packed into one tensor, of
    the ``shapes`` (after the batch) given with them."""

    def forward(self, packed: Tensor, shapes: list[Size]) -> Tensor:
        return super().forward(unpack(packed, shapes))


class JoinedFeatures(nn.Module):
    """MobileNetV5's ``forward_features``, handing the fusion adapter the stage outputs it reads
    (the stem's output is index 0) as one packed tensor."""

    def forward_features(self, x: Tensor) -> Tensor:
        outputs = [self.conv_stem(x)]
        for stage in self.blocks:
            outputs.append(stage(outputs[-1]))
        if self.msfa is None:  # the adapter pruned: the last stage's output
            return outputs[-1]
        taken = [outputs[index] for index in self.msfa_indices]
        return self.msfa(pack(taken), shapes=[output.shape[1:] for output in taken])


class JoinedMobileNetV5(JoinedFeatures, MobileNetV5):
    """timm ``MobileNetV5`` whose fusion adapter reads one packed tensor."""


class JoinedMobileNetV5Encoder(JoinedFeatures, MobileNetV5Encoder):
    """timm ``MobileNetV5Encoder`` whose fusion adapter reads one packed tensor."""


def joined(model: MobileNetV5 | MobileNetV5Encoder) -> nn.Module:
    """The model itself, its class and its fusion adapter's made the joined ones (no new
    parameters: the keys stay the ANN's)."""
    model.__class__ = JoinedMobileNetV5 if isinstance(model, MobileNetV5) else JoinedMobileNetV5Encoder
    if model.msfa is not None:
        model.msfa.__class__ = JoinedFusionAdapter
    return model


register(RmsNorm2d, Role.NONLINEAR)  # and RmsNormAct2d, its subclass with an activation
# the stem's convolution reads the image; blocks=k reads the ANN
for cls in (MobileNetV5, MobileNetV5Encoder):
    register(cls, Role.INPUT, twin=joined, blocks=stage_blocks)
for cls in (JoinedMobileNetV5, JoinedMobileNetV5Encoder):
    register(cls, Role.INPUT, links=network_links)
register(JoinedFusionAdapter, Role.CONTAINER)
