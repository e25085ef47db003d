"""Rules for transformers' CvT classifier (``CvtForImageClassification``: CvT-13, -21, W24), on the
logits form of :mod:`.hf_vit`.

CvT (Wu et al. 2021) is a pyramid of three stages, each a convolutional token embedding (a strided
convolution and a LayerNorm) and pre-norm layers whose attention reads q, k and v through a
convolutional projection: each of the three is the token map through a depthwise convolution and a
BatchNorm (k's and v's with stride 2), flattened, then a Linear. The depthwise convolution and the
Linear are weight layers in series with nothing between them but the BatchNorm's affine map, so
each gets its own MT neurons; the last stage adds a class token after the embedding, which skips
the convolutions and joins the projected tokens before the Linears. The scores are scaled by the
embedding width to the -1/2 (CvT's own choice, not the head width). The classifier reads the
LayerNorm of the last stage's class token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers.models.cvt import modeling_cvt as cvt

from . import Role, register
from .hf_vit import _TokenMean, register_classifiers, register_family
from .timm_twins import SoftmaxHeads

#: the attention's three branches, by the suffix of its projections' names
BRANCHES = ("query", "key", "value")


class ExplicitCvtAttention(SoftmaxHeads):
    """CvT's self-attention with Q·Kᵀ, softmax and attn·V as modules: for each of q, k and v, the
    token map through its convolutional projection (``convolution_projection_*``), the class token
    put back in front, the Linear ``projection_*``; each head softmax(q·kᵀ/√C)·v. Returns the heads
    side by side, as the output projection is the sibling ``output.dense``."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.num_heads, self.with_cls_token = attn.num_heads, attn.with_cls_token
        for branch in BRANCHES:
            for name in (f"convolution_projection_{branch}", f"projection_{branch}"):
                setattr(self, name, getattr(attn, name))
        self._init_heads(attn)

    def forward(self, hidden_state: Tensor, height: int, width: int) -> Tensor:
        cls_token = hidden_state[:, :1] if self.with_cls_token else None
        tokens = hidden_state[:, 1:] if self.with_cls_token else hidden_state
        grid = tokens.transpose(1, 2).unflatten(-1, (height, width))
        q, k, v = (self.branch(name, grid, cls_token) for name in BRANCHES)
        return self.heads(q, k, v).transpose(1, 2).flatten(-2)

    def branch(self, name: str, grid: Tensor, cls_token: Tensor | None) -> Tensor:
        """One of q, k, v as [B, heads, tokens, head_dim]: the map's convolutional projection, the
        class token in front where the stage has one, the Linear."""
        tokens = getattr(self, f"convolution_projection_{name}")(grid)
        if cls_token is not None:
            tokens = torch.cat((cls_token, tokens), dim=1)
        projected = getattr(self, f"projection_{name}")(tokens)
        return projected.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)


class CvtLogits(_TokenMean, cvt.CvtForImageClassification):
    staged, stage_layers = True, "layers"

    def tokens(self, pixel_values: Tensor) -> Tensor:
        """The stages, then the classifier's LayerNorm of the last stage's class token (transformers'
        classifier reads it alone: without one, its forward fails)."""
        return self.layernorm(self.cvt.encoder(pixel_values, return_dict=False)[1])


register_classifiers({cvt.CvtForImageClassification: CvtLogits})
register_family(cvt, {"SelfAttention": ExplicitCvtAttention})
# the convolutional projection: a depthwise convolution and a BatchNorm, then a reshape
for cls in (
    cvt.CvtSelfAttentionProjection,
    cvt.CvtSelfAttentionConvProjection,
    cvt.CvtSelfAttentionLinearProjection,
):
    register(cls, Role.CONTAINER)
register(ExplicitCvtAttention, Role.CONTAINER)
