"""Rules for torchvision's MaxViT (``torchvision.models.MaxVit``: ``maxvit_t``; Tu et al. 2022,
"MaxViT: Multi-Axis Vision Transformer").

A MaxViT layer is an MBConv block (BatchNorm, 1×1 and depthwise 3×3 convolutions with BatchNorm and
GELU, squeeze-and-excitation, a 1×1 convolution; a pooled 1×1 projection on the residual path where
it downsamples), then attention inside non-overlapping windows (block attention), then attention
across the image on a dilated grid (grid attention), each followed by an MLP. Partition, the grid's
axis swap and their reverses are linear; the attention adds a learned bias per head and relative
offset, gathered from parameters by a constant index, to the scores: a constant. The
squeeze-and-excitation (:mod:`.squeeze_excite`) multiplies the features by a sigmoid of their
channel means, a product of two spiking operands. Convolutions and Linears are weight layers with
MT neurons but for the stem's first convolution, which reads the image; GELU, SiLU, the sigmoid,
LayerNorm and the classifier's Tanh become EC modules, BatchNorm in evaluation is affine. One rate
link runs from the stem to the classifier's last Linear. ``blocks=k`` counts MaxViT layers (the
paper's MaxViT blocks: MBConv, block and grid attention) stage by stage.
"""

from __future__ import annotations

from torch import Tensor
from torchvision.models.maxvit import (
    MaxVit,
    MaxVitBlock,
    MaxVitLayer,
    MBConv,
    PartitionAttentionLayer,
    RelativePositionalMultiHeadAttention,
    SwapAxes,
    WindowDepartition,
    WindowPartition,
)

from ..compensation import ExpectationCompensation
from . import Link, Role, register
from .links import link_all
from .timm_twins import SoftmaxHeads, split_qkv


class ExplicitRelativeAttention(SoftmaxHeads):
    """torchvision's ``RelativePositionalMultiHeadAttention`` with Q·Kᵀ, softmax and attn·V as
    modules. Its scores are scaled by the feature width's (not a head's) inverse square root, as
    torchvision's are. Shares the original's projections, bias table and index under their names."""

    def __init__(self, attn: RelativePositionalMultiHeadAttention) -> None:
        super().__init__()
        self.n_heads, self.max_seq_len = attn.n_heads, attn.max_seq_len
        self.to_qkv, self.merge = attn.to_qkv, attn.merge
        self.relative_position_bias_table = attn.relative_position_bias_table
        self.register_buffer("relative_position_index", attn.relative_position_index)
        self._init_heads(attn, scale=attn.scale_factor)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, partitions, tokens, D] -> the same."""
        batch, groups, tokens, dim = x.shape
        q, k, v = split_qkv(self.to_qkv(x).flatten(0, 1), self.n_heads)
        # [1, heads, tokens, tokens], from parameters alone: a constant
        bias = RelativePositionalMultiHeadAttention.get_relative_positional_bias(self)
        out = self.heads(q, k, v, bias).transpose(1, 2).reshape(batch, groups, tokens, dim)
        return self.merge(out)


def _network_links(maxvit: MaxVit) -> list[Link]:
    """One link from the stem to the classifier's last Linear (or to the classifier, left analog by
    ``blocks=k``), which emits the increments the simulation averages."""
    analog = isinstance(maxvit.classifier, ExpectationCompensation)
    return link_all(maxvit, "classifier" if analog else f"classifier.{len(maxvit.classifier) - 1}")


def _blocks(maxvit: MaxVit) -> list[str]:
    """The MaxViT layers in forward order, stage by stage."""
    return [path for path, module in maxvit.named_modules() if isinstance(module, MaxVitLayer)]


register(RelativePositionalMultiHeadAttention, Role.CONTAINER, twin=ExplicitRelativeAttention)
# the stem's first convolution reads the image
register(MaxVit, Role.INPUT, links=_network_links, blocks=_blocks)
for cls in (
    ExplicitRelativeAttention,
    MBConv,
    PartitionAttentionLayer,
    MaxVitLayer,
    MaxVitBlock,
):
    register(cls, Role.CONTAINER)
for cls in (SwapAxes, WindowPartition, WindowDepartition):
    register(cls, Role.PASSTHROUGH)
