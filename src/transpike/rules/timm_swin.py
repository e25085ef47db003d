"""Rules for timm's Swin Transformer (``SwinTransformer``: Swin-T/S/B/L and the S3 variants).

A Swin block is a pre-norm ViT block whose attention runs inside windows of the token grid: the
cyclic shift (``torch.roll``), the zero padding, the window partition and its reverse only move
or add zero tokens, and the relative position bias and the shifted windows' mask are constants
added to the attention scores, so all of it is linear and the same at every step. What converts
is what converts in a ViT: Q·Kᵀ and attn·V with MT neurons on both operands and the product EC,
softmax and the LayerNorms (also patch merging's) as EC modules, and an MT neuron before every
Linear (qkv, proj, the MLP, patch merging's reduction, the head). Patch merging's regrouping of
2×2 tokens and the head's average pool are linear. The patch embedding sees the image at every
step, as in a ViT. Swin V2 has rules of its own (:mod:`.timm_swinv2`).
"""

from __future__ import annotations

from dataclasses import dataclass

from timm.models.swin_transformer import (
    PatchMerging,
    SwinTransformer,
    SwinTransformerBlock,
    SwinTransformerStage,
    WindowAttention,
)
from torch import Tensor, nn

from ..compensation import ExpectationCompensation
from . import Link, Role, register
from .timm_twins import SoftmaxHeads, split_qkv
from .timm_vit import attention_links, chain, feeds


def with_mask(bias: Tensor, mask: Tensor | None, batch: int) -> Tensor:
    """The scores' constant ``bias`` [heads, tokens, tokens] plus a shifted window's ``mask``
    [windows, tokens, tokens] (0 or -100), for ``batch`` windows: they come batch-major out of the
    partition (window = index % windows)."""
    return bias if mask is None else bias + mask.repeat(batch // mask.shape[0], 1, 1).unsqueeze(1)


class ExplicitWindowAttention(SoftmaxHeads):
    """timm ``WindowAttention`` with Q·Kᵀ, softmax and attn·V as modules (timm may call one fused
    kernel); shares the original's qkv, proj and relative position bias table."""

    def __init__(self, attn: WindowAttention) -> None:
        super().__init__()
        self.num_heads, self.window_area = attn.num_heads, attn.window_area
        self.qkv = attn.qkv
        self._init_heads(attn)
        self.norm, self.gate = nn.Identity(), None  # as ExplicitAttention has them, for its links
        self.proj, self.proj_drop = attn.proj, attn.proj_drop
        self.relative_position_bias_table = attn.relative_position_bias_table
        self.register_buffer("relative_position_index", attn.relative_position_index, persistent=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: [windows·B, tokens, C]; mask: [windows, tokens, tokens] (0 or -100) or None."""
        batch, tokens, _ = x.shape
        q, k, v = split_qkv(self.qkv(x), self.num_heads)
        bias = WindowAttention._get_rel_pos_bias(self)  # [1, heads, tokens, tokens], from the table
        out = self.heads(q, k, v, with_mask(bias, mask, batch)).transpose(1, 2).reshape(batch, tokens, -1)
        return self.proj_drop(self.proj(out))


def _block_links(block: SwinTransformerBlock) -> list[Link]:
    """SwinTransformerBlock.forward: norm1 feeds only qkv (through shift, padding and windows),
    norm2 only the MLP's input layers."""
    return [("norm1", ("attn.qkv",)), *feeds("norm2", "mlp", block.mlp)]


def _merging_links(merging: PatchMerging) -> list[Link]:
    """PatchMerging.forward: padding and the 2×2 regrouping, then norm feeds only the reduction."""
    return [("norm", ("reduction",))]


@dataclass(frozen=True)
class StreamEnds:
    """Where a Swin family's residual stream is written and read: in each block (paths inside
    it) and in patch merging (which writes the next stage's stream from what it reads)."""

    merging: type
    block_writers: tuple[str, ...]
    block_readers: tuple[str, ...]
    merging_writer: str
    merging_reader: str


#: pre-norm Swin: the attention's and the MLP's projections write, the norms read; patch merging
#: normalizes, then reduces
PRE_NORM = StreamEnds(PatchMerging, ("attn.proj", "mlp.fc2"), ("norm1", "norm2"), "reduction", "norm")


def stage_streams(swin: nn.Module, ends: StreamEnds = PRE_NORM) -> list[Link]:
    """Each stage's residual stream: its blocks write it (through window reverse, roll and
    DropPath, linear) and read it, then the next stage's patch merging reads it (through padding
    and the 2×2 regrouping), or the final norm. Patch merging writes the stream of a later stage;
    the first stage's comes from the patch embedding, the same at every step: its own rate. Only
    stages whose blocks are all converted link, up to the first module left analog by
    ``blocks=k``, which reads rates."""
    links: list[Link] = []
    for index, stage in enumerate(swin.layers):
        downsample = getattr(stage, "downsample", None)  # None: the whole stage is left analog
        if downsample is None or any(isinstance(block, ExpectationCompensation) for block in stage.blocks):
            break
        if isinstance(downsample, ends.merging):
            producers = [f"layers.{index}.downsample.{ends.merging_writer}"]
        elif index == 0:
            producers = []
        else:
            break  # a stage without patch merging continues the previous stream: not linked
        readers = []
        for number in range(len(stage.blocks)):
            producers += [f"layers.{index}.blocks.{number}.{path}" for path in ends.block_writers]
            readers += [f"layers.{index}.blocks.{number}.{path}" for path in ends.block_readers]
        after = _reader_after(swin, index, ends)
        if after is None:
            break
        links.append((tuple(producers), (*readers, after)))
    return links


def _reader_after(swin: nn.Module, index: int, ends: StreamEnds) -> str | None:
    """Who reads stage ``index``'s stream after its blocks: the next stage's patch merging (the
    next stage itself when it is left analog), else the final norm; None when neither."""
    if index + 1 < len(swin.layers):
        following = swin.layers[index + 1]
        if isinstance(following, ExpectationCompensation):
            return f"layers.{index + 1}"
        merging = isinstance(following.downsample, ends.merging)
        return f"layers.{index + 1}.downsample.{ends.merging_reader}" if merging else None
    return "norm" if not isinstance(swin.norm, nn.Identity) else None


def head_links(swin: SwinTransformer) -> list[Link]:
    """The final norm feeds only the head: its classifier through an average pool (linear), or the
    max pool's EC module, which feeds the classifier; the head as a whole when ``blocks=k`` leaves
    it analog. None without a classifier (the output is then the norm's)."""
    head = swin.head
    if isinstance(swin.norm, nn.Identity) or isinstance(getattr(head, "fc", None), nn.Identity):
        return []
    if isinstance(head, ExpectationCompensation):
        return [("norm", ("head",))]
    if isinstance(head.global_pool.pool, ExpectationCompensation):
        return chain("norm", "head.global_pool.pool", "head.fc")
    return [("norm", ("head.fc",))]


def _model_links(swin: SwinTransformer) -> list[Link]:
    return stage_streams(swin) + head_links(swin)


register(WindowAttention, Role.CONTAINER, twin=ExplicitWindowAttention)
register(ExplicitWindowAttention, Role.CONTAINER, links=attention_links)
register(SwinTransformerBlock, Role.CONTAINER, links=_block_links)
register(SwinTransformer, Role.CONTAINER, links=_model_links)
register(SwinTransformerStage, Role.CONTAINER)
register(PatchMerging, Role.CONTAINER, links=_merging_links)
