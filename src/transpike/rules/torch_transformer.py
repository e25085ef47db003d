"""Rules for torch's own Transformer layers: ``nn.MultiheadAttention`` (torchvision's ViT uses it),
``nn.TransformerEncoderLayer``, ``nn.TransformerEncoder``, ``nn.TransformerDecoderLayer`` and
``nn.TransformerDecoder`` (a head of learned queries reading the image's tokens, as ML-Decoder and
Query2Label build it).

Each hides its computation (a fused kernel in evaluation: ``_native_multi_head_attention``,
``_transformer_encoder_layer_fwd``), so each is swapped for an explicit twin with the same
children under the same names: the attention's products and softmax become modules, the layers'
activation a module (``F.relu`` / ``F.gelu`` as ``nn.ReLU`` / ``nn.GELU``), and the encoder and
decoder plain loops over their layers. A decoder layer's ``multihead_attn`` is cross-attention
(queries from the targets, keys and values from the memory), so its twin projects the two with two
weight layers, each with its own neurons. Attention masks and padding masks are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from . import Link, Role, register
from .timm_twins import SoftmaxHeads, refuse_mask, split_qkv


def shared_linear(weight: nn.Parameter, bias: nn.Parameter | None, rows: slice = slice(None)) -> nn.Linear:
    """A plain Linear holding these very parameters, or ``rows`` of them (views: nothing copied,
    nothing allocated)."""
    if rows != slice(None):
        weight = nn.Parameter(weight.detach()[rows])
        bias = None if bias is None else nn.Parameter(bias.detach()[rows])
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    linear.weight, linear.bias = weight, bias
    return linear


def batch_first(x: Tensor, first: bool) -> Tensor:
    """An attention input as [B, tokens, width]: unbatched [tokens, width] or sequence-first
    [tokens, B, width] (``first`` False) made batch-first."""
    return x.unsqueeze(0) if x.dim() == 2 else x if first else x.transpose(0, 1)


def as_given(out: Tensor, like: Tensor, first: bool) -> Tensor:
    """A batch-first output laid out as the input ``like`` was (:func:`batch_first`'s inverse)."""
    return out.squeeze(0) if like.dim() == 2 else out if first else out.transpose(0, 1)


class ExplicitMultiheadAttention(SoftmaxHeads):
    """``nn.MultiheadAttention`` as self-attention, with Q·Kᵀ, softmax and attn·V as modules
    (torch runs one fused kernel in evaluation): q, k, v = x·W_inᵀ + b_in split in three, each
    head softmax(q·kᵀ/√d)·v, then ``out_proj``. Batch-first or sequence-first, batched or not.

    ``qkv`` and ``out_proj`` are plain Linear layers holding the original's parameters;
    :attr:`ann_keys` maps ``qkv``'s keys back to ``in_proj_weight`` and ``in_proj_bias``.
    Attention weights are not computed: the second output is always None (torchvision's ViT and
    ``nn.TransformerEncoderLayer`` ask for none).
    """

    ann_keys: ClassVar[dict] = {"qkv.weight": "in_proj_weight", "qkv.bias": "in_proj_bias"}

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.num_heads, self.batch_first = mha.num_heads, mha.batch_first
        self._project_from(mha)
        self._init_heads(mha, scale=mha.head_dim**-0.5)
        self.out_proj = shared_linear(mha.out_proj.weight, mha.out_proj.bias)

    def _project_from(self, mha: nn.MultiheadAttention) -> None:
        self.qkv = shared_linear(mha.in_proj_weight, mha.in_proj_bias)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, None]:
        refuse_mask(attn_mask, is_causal)
        refuse_mask(key_padding_mask)
        x = batch_first(query, self.batch_first)
        heads = self._attend(x, query, key, value)  # [B, heads, tokens, head_dim]
        out = self.out_proj(heads.transpose(1, 2).reshape(x.shape))
        return as_given(out, query, self.batch_first), None

    def _attend(self, x: Tensor, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        if key is not query or value is not query:
            raise ValueError(
                "nn.MultiheadAttention converts as self-attention (query, key and value the same tensor), "
                "or as the cross-attention of an nn.TransformerDecoderLayer"
            )
        return self.heads(*split_qkv(self.qkv(x), self.num_heads))


class ExplicitCrossAttention(ExplicitMultiheadAttention):
    """``nn.MultiheadAttention`` as cross-attention (an ``nn.TransformerDecoderLayer``'s
    ``multihead_attn``): q = x·W_qᵀ + b_q from the queries x, [k, v] = m·W_kvᵀ + b_kv from the memory
    m, each head softmax(q·kᵀ/√d)·v, then ``out_proj``; W_q and W_kv are the first third and the
    rest of the packed ``in_proj_weight`` (b likewise). The two projections read different tensors,
    so they are two weight layers, each with its own neurons; :attr:`ann_keys` maps their
    parameters back to the packed ones' parts.
    """

    ann_keys: ClassVar[dict] = {
        "q_proj.weight": ("in_proj_weight", 0),
        "kv_proj.weight": ("in_proj_weight", 1),
        "q_proj.bias": ("in_proj_bias", 0),
        "kv_proj.bias": ("in_proj_bias", 1),
    }

    def _project_from(self, mha: nn.MultiheadAttention) -> None:
        width = mha.embed_dim
        self.q_proj = shared_linear(mha.in_proj_weight, mha.in_proj_bias, slice(0, width))
        self.kv_proj = shared_linear(mha.in_proj_weight, mha.in_proj_bias, slice(width, None))

    def _attend(self, x: Tensor, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        if value is not key:
            raise ValueError("cross-attention converts with key and value the same tensor (the memory)")
        (q,) = split_qkv(self.q_proj(x), self.num_heads, parts=1)
        memory = batch_first(key, self.batch_first)
        return self.heads(q, *split_qkv(self.kv_proj(memory), self.num_heads, parts=2))


def _refuse_multihead(mha: nn.MultiheadAttention) -> str | None:
    if mha.bias_k is not None:
        return "add_bias_kv=True (learned key and value tokens) is not supported"
    if mha.add_zero_attn:
        return "add_zero_attn=True is not supported"
    if not mha._qkv_same_embed_dim:
        return (f"kdim={mha.kdim} / vdim={mha.vdim} differ from embed_dim={mha.embed_dim}: separate key and "
                "value projections are not supported")  # fmt: skip
    return None


def _multihead_links(attn: ExplicitMultiheadAttention) -> list[Link]:
    """q, k and v from qkv into the products' operand neurons, the scores through the softmax,
    attn·V into the output projection."""
    return [("qkv", ("qk.neuron_a", "qk.neuron_b", "av.neuron_b")), *_HEAD_LINKS]


def _cross_links(attn: ExplicitCrossAttention) -> list[Link]:
    """q from q_proj, k and v from kv_proj into the products' operand neurons; the rest as in
    self-attention."""
    return [("q_proj", ("qk.neuron_a",)), ("kv_proj", ("qk.neuron_b", "av.neuron_b")), *_HEAD_LINKS]


#: the scores through the softmax, attn·V into the output projection
_HEAD_LINKS: list[Link] = [("qk", ("softmax",)), ("softmax", ("av.neuron_a",)), ("av", ("out_proj",))]


#: the activation modules that stand for the functions nn.TransformerEncoderLayer accepts
_ACTIVATIONS: dict[Callable, Callable[[], nn.Module]] = {F.relu: nn.ReLU, F.gelu: nn.GELU}


class ExplicitEncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` without its fused path: post-norm
    ``x = norm1(x + SA(x)); x = norm2(x + FF(x))`` or pre-norm (``norm_first``)
    ``x = x + SA(norm1(x)); x = x + FF(norm2(x))``, with FF(x) = linear2(activation(linear1(x))).
    Shares the original's children under their names; its activation is a module."""

    shared: ClassVar[tuple[str, ...]] = (
        "self_attn", "linear1", "dropout", "linear2", "norm1", "norm2", "dropout1", "dropout2"
    )  # fmt: skip
    feed_forward_dropout: ClassVar[str] = "dropout2"  # the one after linear2

    def __init__(self, layer: nn.TransformerEncoderLayer | nn.TransformerDecoderLayer) -> None:
        super().__init__()
        for name in self.shared:
            setattr(self, name, getattr(layer, name))
        activation = layer.activation
        self.activation = activation if isinstance(activation, nn.Module) else _ACTIVATIONS[activation]()
        self.norm_first = layer.norm_first

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        refuse_mask(src_mask, is_causal)
        refuse_mask(src_key_padding_mask)
        if self.norm_first:
            src = src + self._attend(self.norm1(src))
            return src + self._feed_forward(self.norm2(src))
        src = self.norm1(src + self._attend(src))
        return self.norm2(src + self._feed_forward(src))

    def _attend(self, x: Tensor) -> Tensor:
        return self.dropout1(self.self_attn(x, x, x, need_weights=False)[0])

    def _feed_forward(self, x: Tensor) -> Tensor:
        out = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return getattr(self, self.feed_forward_dropout)(out)


class ExplicitDecoderLayer(ExplicitEncoderLayer):
    """``nn.TransformerDecoderLayer`` without its fused path: post-norm
    ``x = norm1(x + SA(x)); x = norm2(x + CA(x, m)); x = norm3(x + FF(x))`` or pre-norm
    (``norm_first``) ``x = x + SA(norm1(x)); x = x + CA(norm2(x), m); x = x + FF(norm3(x))``: SA
    self-attention over the targets x, CA cross-attention from them to the memory m
    (:class:`ExplicitCrossAttention`), FF as in :class:`ExplicitEncoderLayer`."""

    shared: ClassVar[tuple[str, ...]] = (*ExplicitEncoderLayer.shared, "norm3", "dropout3")
    feed_forward_dropout: ClassVar[str] = "dropout3"

    def __init__(self, layer: nn.TransformerDecoderLayer) -> None:
        super().__init__(layer)
        self.multihead_attn = ExplicitCrossAttention(layer.multihead_attn)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool | None = False,
        memory_is_causal: bool = False,
    ) -> Tensor:
        for mask in (tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask):
            refuse_mask(mask)
        refuse_mask(None, bool(tgt_is_causal) or memory_is_causal)
        x = tgt
        if self.norm_first:
            x = x + self._attend(self.norm1(x))
            x = x + self._cross(self.norm2(x), memory)
            return x + self._feed_forward(self.norm3(x))
        x = self.norm1(x + self._attend(x))
        x = self.norm2(x + self._cross(x, memory))
        return self.norm3(x + self._feed_forward(x))

    def _cross(self, x: Tensor, memory: Tensor) -> Tensor:
        return self.dropout2(self.multihead_attn(x, memory, memory, need_weights=False)[0])


class ExplicitEncoder(nn.Module):
    """``nn.TransformerEncoder`` without its nested-tensor fast path: its layers in turn, then its
    norm when it has one. Shares the original's children."""

    def __init__(self, encoder: nn.TransformerEncoder) -> None:
        super().__init__()
        self.layers, self.norm = encoder.layers, encoder.norm

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool | None = None,
    ) -> Tensor:
        refuse_mask(mask, bool(is_causal))
        refuse_mask(src_key_padding_mask)
        for layer in self.layers:
            src = layer(src)
        return src if self.norm is None else self.norm(src)


class ExplicitDecoder(ExplicitEncoder):
    """``nn.TransformerDecoder``: its layers in turn on the targets, each reading the same memory,
    then its norm when it has one. Shares the original's children."""

    def forward(self, tgt: Tensor, memory: Tensor, *masks: object, **named: object) -> Tensor:
        """torch's further arguments (masks, causal flags) go to every layer, as torch passes them,
        and the layers refuse any mask given."""
        for layer in self.layers:
            tgt = layer(tgt, memory, *masks, **named)
        return tgt if self.norm is None else self.norm(tgt)


def _refuse_activation(layer: nn.TransformerEncoderLayer | nn.TransformerDecoderLayer) -> str | None:
    activation = layer.activation
    if isinstance(activation, nn.Module) or activation in _ACTIVATIONS:
        return None
    name = getattr(activation, "__name__", repr(activation))
    return f"its activation is the function {name}; give it as an nn.Module (for example nn.SiLU())"


def _refuse_decoder_layer(layer: nn.TransformerDecoderLayer) -> str | None:
    """The encoder layer's refusal, and the cross-attention's (its twin is built here, not by the
    rule for nn.MultiheadAttention, which checks the self-attention)."""
    reason = _refuse_multihead(layer.multihead_attn)
    return _refuse_activation(layer) or (reason and f"its multihead_attn: {reason}")


def _layer_links(layer: ExplicitEncoderLayer) -> list[Link]:
    """linear1 -> activation -> linear2; pre-norm, each norm feeds only what reads it: norm1 the
    self-attention's qkv (when the attention converts), a decoder layer's norm2 the
    cross-attention's q_proj, the last norm linear1 (post-norm norms write the residual stream
    instead)."""
    links = [("linear1", ("activation",)), ("activation", ("linear2",))]
    if layer.norm_first and isinstance(layer.self_attn, ExplicitMultiheadAttention):
        cross = ["multihead_attn.q_proj"] if isinstance(layer, ExplicitDecoderLayer) else []
        readers = ["self_attn.qkv", *cross, "linear1"]
        links += [(f"norm{index}", (reader,)) for index, reader in enumerate(readers, 1)]
    return links


register(nn.MultiheadAttention, Role.CONTAINER, twin=ExplicitMultiheadAttention, check=_refuse_multihead)
register(ExplicitMultiheadAttention, Role.CONTAINER, links=_multihead_links)

register(nn.TransformerEncoderLayer, Role.CONTAINER, twin=ExplicitEncoderLayer, check=_refuse_activation)
register(ExplicitEncoderLayer, Role.CONTAINER, links=_layer_links)
register(nn.TransformerEncoder, Role.CONTAINER, twin=ExplicitEncoder)
register(ExplicitEncoder, Role.CONTAINER)
register(ExplicitCrossAttention, Role.CONTAINER, links=_cross_links)
register(nn.TransformerDecoderLayer, Role.CONTAINER, twin=ExplicitDecoderLayer, check=_refuse_decoder_layer)
register(ExplicitDecoderLayer, Role.CONTAINER, links=_layer_links)
register(nn.TransformerDecoder, Role.CONTAINER, twin=ExplicitDecoder)
register(ExplicitDecoder, Role.CONTAINER)
