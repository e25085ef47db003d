"""Rules for torch's own Transformer layers: ``nn.MultiheadAttention`` (torchvision's ViT uses it),
``nn.TransformerEncoderLayer`` and ``nn.TransformerEncoder``.

Each hides its computation (a fused kernel in evaluation: ``_native_multi_head_attention``,
``_transformer_encoder_layer_fwd``), so each is swapped for an explicit twin with the same
children under the same names: the attention's products and softmax become modules, the encoder
layer's activation a module (``F.relu`` / ``F.gelu`` as ``nn.ReLU`` / ``nn.GELU``), and the
encoder a plain loop over its layers. Attention masks and padding masks are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from . import Link, Role, register
from .timm_twins import SoftmaxHeads, refuse_mask, split_qkv


def shared_linear(weight: nn.Parameter, bias: nn.Parameter | None) -> nn.Linear:
    """A plain Linear holding these very parameters (nothing copied, nothing allocated)."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    linear.weight, linear.bias = weight, bias
    return linear


class ExplicitMultiheadAttention(SoftmaxHeads):
    """``nn.MultiheadAttention`` as self-attention, with Q·Kᵀ, softmax and attn·V as modules
    (torch runs one fused kernel in evaluation): q, k, v = x·W_inᵀ + b_in split in three, each
    head softmax(q·kᵀ/√d)·v, then ``out_proj``. Batch-first or sequence-first, batched or not.

    ``qkv`` and ``out_proj`` are plain Linear layers holding the original's parameters;
    :attr:`ann_keys` maps ``qkv``'s keys back to ``in_proj_weight`` and ``in_proj_bias``.
    Attention weights are not computed: the second output is always None (torchvision's ViT and
    ``nn.TransformerEncoderLayer`` ask for none).
    """

    ann_keys: ClassVar[dict[str, str]] = {"qkv.weight": "in_proj_weight", "qkv.bias": "in_proj_bias"}

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.num_heads, self.batch_first = mha.num_heads, mha.batch_first
        self.qkv = shared_linear(mha.in_proj_weight, mha.in_proj_bias)
        self._init_heads(mha, scale=mha.head_dim**-0.5)
        self.out_proj = shared_linear(mha.out_proj.weight, mha.out_proj.bias)

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
        if key is not query or value is not query:
            raise ValueError(
                "nn.MultiheadAttention converts as self-attention only: query, key and value must be "
                "the same tensor"
            )
        unbatched = query.dim() == 2
        x = query.unsqueeze(0) if unbatched else query if self.batch_first else query.transpose(0, 1)
        heads = self.heads(*split_qkv(self.qkv(x), self.num_heads))  # [B, heads, tokens, head_dim]
        out = self.out_proj(heads.transpose(1, 2).reshape(x.shape))
        return (out.squeeze(0) if unbatched else out if self.batch_first else out.transpose(0, 1)), None


def _refuse_multihead(mha: nn.MultiheadAttention) -> str | None:
    if mha.bias_k is not None:
        return "add_bias_kv=True (learned key and value tokens) is not supported"
    if mha.add_zero_attn:
        return "add_zero_attn=True is not supported"
    if not mha._qkv_same_embed_dim:
        return f"kdim={mha.kdim} / vdim={mha.vdim} differ from embed_dim={mha.embed_dim}: not self-attention"
    return None


def _multihead_links(attn: ExplicitMultiheadAttention) -> list[Link]:
    """q, k and v from qkv into the products' operand neurons, the scores through the softmax,
    attn·V into the output projection."""
    return [
        ("qkv", ("qk.neuron_a", "qk.neuron_b", "av.neuron_b")),
        ("qk", ("softmax",)),
        ("softmax", ("av.neuron_a",)),
        ("av", ("out_proj",)),
    ]


#: the activation modules that stand for the functions nn.TransformerEncoderLayer accepts
_ACTIVATIONS: dict[Callable, Callable[[], nn.Module]] = {F.relu: nn.ReLU, F.gelu: nn.GELU}


class ExplicitEncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` without its fused path: post-norm
    ``x = norm1(x + SA(x)); x = norm2(x + FF(x))`` or pre-norm (``norm_first``)
    ``x = x + SA(norm1(x)); x = x + FF(norm2(x))``, with FF(x) = linear2(activation(linear1(x))).
    Shares the original's children under their names; its activation is a module."""

    def __init__(self, layer: nn.TransformerEncoderLayer) -> None:
        super().__init__()
        for name in ("self_attn", "linear1", "dropout", "linear2", "norm1", "norm2", "dropout1", "dropout2"):
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
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


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


def _refuse_activation(layer: nn.TransformerEncoderLayer) -> str | None:
    activation = layer.activation
    if isinstance(activation, nn.Module) or activation in _ACTIVATIONS:
        return None
    name = getattr(activation, "__name__", repr(activation))
    return f"its activation is the function {name}; give it as an nn.Module (for example nn.SiLU())"


def _encoder_layer_links(layer: ExplicitEncoderLayer) -> list[Link]:
    """linear1 -> activation -> linear2; pre-norm: norm1 feeds only the attention's qkv (when the
    attention converts) and norm2 only linear1 (post-norm norms write the residual stream instead)."""
    links = [("linear1", ("activation",)), ("activation", ("linear2",))]
    if layer.norm_first and isinstance(layer.self_attn, ExplicitMultiheadAttention):
        links += [("norm1", ("self_attn.qkv",)), ("norm2", ("linear1",))]
    return links


register(nn.MultiheadAttention, Role.CONTAINER, twin=ExplicitMultiheadAttention, check=_refuse_multihead)
register(ExplicitMultiheadAttention, Role.CONTAINER, links=_multihead_links)

register(nn.TransformerEncoderLayer, Role.CONTAINER, twin=ExplicitEncoderLayer, check=_refuse_activation)
register(ExplicitEncoderLayer, Role.CONTAINER, links=_encoder_layer_links)
register(nn.TransformerEncoder, Role.CONTAINER, twin=ExplicitEncoder)
register(ExplicitEncoder, Role.CONTAINER)
