"""Rules for transformers' PoolFormer classifier (``PoolFormerForImageClassification``: S12 to M48),
on the logits form of :mod:`.hf_vit`; the architecture is PoolFormer v1 as timm builds it
(:mod:`.timm_metaformer`, which describes it), in transformers' layout.

No attention: each layer is GroupNorm of one group → pool(x) − x (an average pool that leaves the
padding out of its counts: a fixed weighted sum of pixels, linear) → residual, GroupNorm → 1×1
convolution, GELU, 1×1 convolution → residual, both branches scaled by LayerScale parameters
(linear). The GroupNorms and the activation are EC modules, every convolution a weight layer with
its MT neuron but the first patch embedding's, which reads the image. The classifier reads the
mean of the GroupNorm of the last map. Nothing needs a twin; the logits form runs the encoder.
"""

from __future__ import annotations

from torch import Tensor
from transformers.models.poolformer import modeling_poolformer as poolformer

from . import Role, register
from .hf_vit import _Logits, register_classifiers, register_family


class PoolFormerLogits(_Logits, poolformer.PoolFormerForImageClassification):
    staged, stage_layers = True, None

    def tokens(self, pixel_values: Tensor) -> Tensor:
        """Each stage's patch embedding and layers: the last map."""
        return self.poolformer.encoder(pixel_values, return_dict=False)[0]

    def readout(self, features: Tensor) -> Tensor:
        """The classifier on the mean of the GroupNorm of the map."""
        return self.classifier(self.norm(features).mean((-2, -1)))


register_classifiers({poolformer.PoolFormerForImageClassification: PoolFormerLogits})
register_family(poolformer, {})
register(poolformer.PoolFormerPooling, Role.CONTAINER)  # a name none of hf_vit's CONTAINERS ends
