"""Rules for timm's vision tower of Gemma 4 (``gemma4_vit_*``: the classifiers and the ``_enc``
encoders).

A Gemma 4 block is a ViT block with sandwich norms: x + norm2(attn(norm1(x))), then
x + norm4(mlp(norm3(x))), all RMSNorms. The attention has separate q, k and v projections, an
RMSNorm on each head's q, k and v (v's without a gain), axial rotary embeddings on q and k (a
rotation by constant angles: linear), grouped-query heads and scale 1; the MLP is gated:
down(GELU-tanh(gate(x)) ⊙ up(x)), a product of two spiking operands. The twins make the
products and the softmax modules. Every projection is a ``Gemma4ClippableLinear``: a Linear that
may clamp its input and its output to bounds a checkpoint gives (Gemma 4 E4B's do); the clamps
are elementwise nonlinear, so each becomes a :class:`Clamp` module (an EC module once converted)
before and after the Linear.

The patch embedding projects flattened patches by a Linear (it reads the image: direct coding)
and adds position embeddings looked up from the grid (a constant, which its twin computes as the
lookup it is rather than timm's product of one-hot codes and the table, 0.77 G multiply-adds per
224 px image, at every step); the soft-token pooler of the encoders averages k × k cells with
weights computed from the grid and scales them (linear). The encoder hands its blocks the rotary
tables by keyword (constants to a block left analog); padded patches (NaFlex inputs with invalid
patches) would mask the attention and are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from timm.models import gemma4_vit
from torch import Tensor, nn

from ..sites import Product
from . import Link, Role, register
from .timm_twins import SoftmaxHeads, refuse_mask
from .timm_vit import chain, converted_blocks, present
from .timm_vlm_vit import encoder_blocks


class Clamp(nn.Module):
    """clamp(x, low, high), the bounds held as buffers (tensors a checkpoint sets)."""

    def __init__(self, low: Tensor, high: Tensor) -> None:
        super().__init__()
        self.register_buffer("low", low)
        self.register_buffer("high", high)

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp(x, self.low, self.high)


class ExplicitClippableLinear(nn.Module):
    """``Gemma4ClippableLinear`` with its clamps as modules: clamp_out(linear(clamp_in(x))).
    :attr:`ann_keys` maps the clamps' bounds back to the original's buffers."""

    ann_keys: ClassVar[dict[str, str]] = {
        "clamp_in.low": "input_min",
        "clamp_in.high": "input_max",
        "clamp_out.low": "output_min",
        "clamp_out.high": "output_max",
    }

    def __init__(self, layer: gemma4_vit.Gemma4ClippableLinear) -> None:
        super().__init__()
        self.clamp_in = Clamp(layer.input_min, layer.input_max)
        self.linear = layer.linear
        self.clamp_out = Clamp(layer.output_min, layer.output_max)

    def forward(self, x: Tensor) -> Tensor:
        return self.clamp_out(self.linear(self.clamp_in(x)))


def _clippable_twin(layer: gemma4_vit.Gemma4ClippableLinear) -> nn.Module:
    """Clamping: its explicit twin; not clamping (``use_clipped`` False): the Linear it holds, as is."""
    return ExplicitClippableLinear(layer) if layer.use_clipped else layer


def _reads(path: str, layer: nn.Module) -> str:
    """The child of a (clippable) projection at ``path`` that reads its input."""
    return f"{path}.clamp_in" if isinstance(layer, ExplicitClippableLinear) else f"{path}.linear"


def _writes(path: str, layer: nn.Module) -> str:
    """The child of a (clippable) projection at ``path`` whose output is the projection's."""
    return f"{path}.clamp_out" if isinstance(layer, ExplicitClippableLinear) else f"{path}.linear"


class ExplicitGemma4Attention(SoftmaxHeads):
    """``Gemma4Attention`` with Q·Kᵀ, the softmax and attn·V as modules: per head,
    softmax(R(n_q(q))·R(n_k(k))ᵀ)·n_v(v) with RMSNorms n and the rotary rotation R, k and v repeated
    for grouped-query heads, then ``o_proj``. Shares the original's children under their names."""

    def __init__(self, attn: gemma4_vit.Gemma4Attention) -> None:
        super().__init__()
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        self.num_kv_heads, self.num_kv_groups = attn.num_kv_heads, attn.num_kv_groups
        self.q_proj, self.k_proj, self.v_proj = attn.q_proj, attn.k_proj, attn.v_proj
        self._init_heads(attn, scale=1.0)  # q and k are normed: no 1/√d
        self.v_norm = attn.v_norm
        self.o_proj, self.proj_drop = attn.o_proj, attn.proj_drop

    def forward(
        self, x: Tensor, rope_cos: Tensor, rope_sin: Tensor, attn_mask: Tensor | None = None
    ) -> Tensor:
        refuse_mask(attn_mask)
        batch, tokens, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(batch, tokens, self.num_heads, self.head_dim))
        k = self.k_norm(self.k_proj(x).view(batch, tokens, self.num_kv_heads, self.head_dim))
        v = self.v_norm(self.v_proj(x).view(batch, tokens, self.num_kv_heads, self.head_dim)).transpose(1, 2)
        q, k = (gemma4_vit.apply_multidimensional_rope(t, rope_cos, rope_sin).transpose(1, 2) for t in (q, k))
        groups = self.num_kv_groups
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        heads = self.heads(q, k, v)  # [B, heads, tokens, head_dim]
        return self.proj_drop(self.o_proj(heads.transpose(1, 2).reshape(batch, tokens, -1)))


def _attention_links(attn: ExplicitGemma4Attention) -> list[Link]:
    """q, k and v into their norms, q and k (rotated: linear) into Q·Kᵀ, v into attn·V, the
    scores through the softmax, attn·V into o_proj."""
    return [
        (_writes("q_proj", attn.q_proj), ("q_norm",)),
        (_writes("k_proj", attn.k_proj), ("k_norm",)),
        (_writes("v_proj", attn.v_proj), ("v_norm",)),
        ("q_norm", ("qk.neuron_a",)),
        ("k_norm", ("qk.neuron_b",)),
        ("v_norm", ("av.neuron_b",)),
        ("qk", ("softmax",)),
        ("softmax", ("av.neuron_a",)),
        ("av", (_reads("o_proj", attn.o_proj),)),
    ]


class ExplicitGemma4GatedMlp(nn.Module):
    """``Gemma4GatedMlp`` with its gating product as a module: down(act(gate(x)) ⊙ up(x)).
    Shares the original's children under their names."""

    def __init__(self, mlp: gemma4_vit.Gemma4GatedMlp) -> None:
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj
        self.act, self.drop = mlp.act, mlp.drop
        self.gating = Product("mul", channels_a=(-1,), channels_b=(-1,))

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.down_proj(self.gating(self.act(self.gate_proj(x)), self.up_proj(x))))


def _mlp_links(mlp: ExplicitGemma4GatedMlp) -> list[Link]:
    """gate -> act -> one factor; up -> the other; the product -> down."""
    return [
        (_writes("gate_proj", mlp.gate_proj), ("act",)),
        ("act", ("gating.neuron_a",)),
        (_writes("up_proj", mlp.up_proj), ("gating.neuron_b",)),
        ("gating", (_reads("down_proj", mlp.down_proj),)),
    ]


def _block_links(block: gemma4_vit.Gemma4Block) -> list[Link]:
    """Gemma4Block.forward: norm1 feeds only the attention's projections and the attention only
    norm2; norm3 only the MLP's gate and up projections, the MLP only norm4."""
    attn, mlp = block.attn, block.mlp
    if not isinstance(attn, ExplicitGemma4Attention) or not isinstance(mlp, ExplicitGemma4GatedMlp):
        return []
    inputs = tuple(_reads(f"attn.{name}", getattr(attn, name)) for name in ("q_proj", "k_proj", "v_proj"))
    return [
        ("norm1", inputs),
        (_writes("attn.o_proj", attn.o_proj), ("norm2",)),
        ("norm3", tuple(_reads(f"mlp.{name}", getattr(mlp, name)) for name in ("gate_proj", "up_proj"))),
        (_writes("mlp.down_proj", mlp.down_proj), ("norm4",)),
    ]


def _classifier_links(model: gemma4_vit.Gemma4VitClassifier) -> list[Link]:
    """The residual stream of the converted blocks (written by their norm2 and norm4, read by their
    norm1 and norm3 and by what follows them: the next block left analog, else the classifier's
    norm, through the pooler when the encoder pools, and the mean, linear), then the norm into the
    head; none when the head is missing (the output is then the features')."""
    if not present(model.head):
        return []
    blocks = model.encoder.blocks
    converted = converted_blocks(blocks)
    after = [name for name in ("norm", "head") if present(getattr(model, name))]
    if not converted:  # none, or an analog block between converted ones
        return chain(*after)
    producers = [f"encoder.blocks.{i}.{norm}" for i in range(converted) for norm in ("norm2", "norm4")]
    readers = [f"encoder.blocks.{i}.{norm}" for i in range(converted) for norm in ("norm1", "norm3")]
    readers.append(f"encoder.blocks.{converted}" if converted < len(blocks) else after[0])
    return [(tuple(producers), tuple(readers)), *chain(*after)]


class PositionLookup(nn.Module):
    """Gemma 4's position embeddings: per patch, the table's row at its x plus the row at its y
    (timm multiplies one-hot codes of the coordinates by the table, the same sum), zero for padded
    patches. A function of the grid alone: the same at every step, its work counted for neither
    network."""

    def __init__(self, table: nn.Parameter) -> None:
        super().__init__()
        self.table = table  # [2, positions, dim]

    def forward(self, position_ids: Tensor, padding_positions: Tensor | None) -> Tensor:
        ids = position_ids.clamp(min=0)
        rows = self.table[0][ids[..., 0]] + self.table[1][ids[..., 1]]
        return rows if padding_positions is None else rows.masked_fill(padding_positions.unsqueeze(-1), 0.0)


class ExplicitGemma4PatchEmbed(gemma4_vit.Gemma4PatchEmbed):
    """``Gemma4PatchEmbed`` with its position embeddings a :class:`PositionLookup` child, which
    holds the table (:attr:`ann_keys` maps it back)."""

    ann_keys: ClassVar[dict[str, str]] = {"position_lookup.table": "position_embedding_table"}

    def _position_embeddings(self, position_ids: Tensor, padding_positions: Tensor | None) -> Tensor:
        return self.position_lookup(position_ids, padding_positions)


def _patch_embed_twin(embed: gemma4_vit.Gemma4PatchEmbed) -> nn.Module:
    table = embed.position_embedding_table
    del embed.position_embedding_table  # moved into the lookup, under one name
    embed.__class__ = ExplicitGemma4PatchEmbed
    embed.position_lookup = PositionLookup(table)
    return embed


class ExplicitGemma4VitEncoder(gemma4_vit.Gemma4VitEncoder):
    """A ``Gemma4VitEncoder`` that hands its blocks the rotary tables by keyword, the form in which
    a block left analog by ``blocks=k`` takes constants, and refuses padded patches (NaFlex inputs
    with invalid patches), which would mask the attention."""

    def _encode(
        self,
        x: Tensor,
        position_ids: Tensor,
        padding_positions: Tensor | None,
        block_callback: Callable[[int, Tensor], None] | None = None,
        max_block_index: int | None = None,
    ) -> Tensor:
        if padding_positions is not None and bool(padding_positions.any()):
            raise ValueError(
                "the converted Gemma 4 tower takes no padded patches: invalid patches (patch_valid, "
                "or patch_coord -1) mask the attention, which conversion does not support"
            )
        rope_cos, rope_sin = self.rotary_emb(x, position_ids)
        blocks = self.blocks if max_block_index is None else self.blocks[: max_block_index + 1]
        for index, block in enumerate(blocks):
            x = block(x, rope_cos=rope_cos, rope_sin=rope_sin)
            if block_callback is not None:
                block_callback(index, x)
        return x


def _encoder_twin(encoder: gemma4_vit.Gemma4VitEncoder) -> nn.Module:
    encoder.__class__ = ExplicitGemma4VitEncoder
    return encoder


register(gemma4_vit.Gemma4VitClassifier, Role.CONTAINER, links=_classifier_links, blocks=encoder_blocks)
register(gemma4_vit.Gemma4VitEncoder, Role.CONTAINER, twin=_encoder_twin)
register(ExplicitGemma4VitEncoder, Role.CONTAINER)  # the _enc models: tokens out, no rate links
register(gemma4_vit.Gemma4PatchEmbed, Role.INPUT, twin=_patch_embed_twin)
register(ExplicitGemma4PatchEmbed, Role.INPUT)
register(PositionLookup, Role.CONSTANT)
register(gemma4_vit.Gemma4RotaryEmbedding2D, Role.PASSTHROUGH)  # cos/sin of the grid, read by the attention
register(gemma4_vit.Gemma4VisionPooler, Role.PASSTHROUGH)  # cell means from the grid, scaled: linear
register(gemma4_vit.Gemma4Block, Role.CONTAINER, links=_block_links)
register(gemma4_vit.Gemma4Attention, Role.CONTAINER, twin=ExplicitGemma4Attention)
register(ExplicitGemma4Attention, Role.CONTAINER, links=_attention_links)
register(gemma4_vit.Gemma4GatedMlp, Role.CONTAINER, twin=ExplicitGemma4GatedMlp)
register(ExplicitGemma4GatedMlp, Role.CONTAINER, links=_mlp_links)
register(gemma4_vit.Gemma4ClippableLinear, Role.CONTAINER, twin=_clippable_twin)
register(ExplicitClippableLinear, Role.CONTAINER, links=lambda _: chain("clamp_in", "linear", "clamp_out"))
register(Clamp, Role.NONLINEAR)
