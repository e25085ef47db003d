"""Explicit twins of timm modules that hide their internals, swapped in by ``prepare``.

timm's attentions and attention pools call one fused ``scaled_dot_product_attention`` kernel (or
compute the scores inline), GLU MLPs and parallel blocks multiply or split activations in their own
forward, and ``VisionTransformer.pool`` takes a max with a function. No hook can reach any of it, so
each twin computes the same function with every product of two activations (:class:`Product`) and
every nonlinearity (softmax, norms, the pooling max) as a module of its own, whether or not timm
would fuse it. A twin shares the original's parameters and submodules under their names, so the
converted network's keys are the ANN's (save/load, ``rebuild_ann``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import (
    AttentionPoolLatent,
    AttentionPoolPrr,
    DiffAttention,
    GluMlp,
    SwiGLU,
    apply_rot_embed_cat,
)
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer, global_pool_nlc
from torch import Tensor, nn

from ..sites import Product

#: the learned λ of differential attention (DiffAttention, DiffParallelScalingBlock); unused ones are None
LAMBDAS = ("lambda_a", "lambda_b", "lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2")


def refuse_mask(attn_mask: Tensor | None, is_causal: bool = False) -> None:
    if attn_mask is not None or is_causal:
        raise ValueError("attention masks are not supported by the converted attention")


class L2Normalize(nn.Module):
    """x / max(‖x‖₂, ε) along ``dim`` (``torch.nn.functional.normalize``), as a module so that it
    can become an EC module (cosine attention: EdgeNeXt's, Swin V2's)."""

    def __init__(self, dim: int = -1, eps: float = 1e-12) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=self.dim, eps=self.eps)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def split_qkv(qkv: Tensor, heads: int, parts: int = 3) -> tuple[Tensor, ...]:
    """One projection's output [B, N, parts·heads·d] as ``parts`` tensors of [B, heads, N, d]:
    q, k and v, or k and v of a key-value projection (``parts=2``)."""
    batch, tokens, _ = qkv.shape
    return qkv.reshape(batch, tokens, parts, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)


def packed_qkv(attn: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v from one Linear ``qkv``, plus the separate q and v biases of EVA, BEiT and Swin V2
    when the attention has them (k's is zeros): the same at every step, their rate is themselves."""
    qkv = attn.qkv(x)
    if attn.q_bias is not None:
        qkv = qkv + torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
    return split_qkv(qkv, attn.num_heads)


class SoftmaxHeads(nn.Module):
    """Attention of q, k, v per head, with Q·Kᵀ, the softmax and attn·V as modules.

    Shared by every twin that attends. With ``differential`` (timm's ``DiffAttention`` and
    ``DiffParallelScalingBlock``, the Differential Transformer), the heads come in pairs and the
    output is (softmax(Q1·K1ᵀ) - λ·softmax(Q2·K2ᵀ))·V, then a per-head RmsNorm (``sub_norm``) and
    the constant factor 1 - λ_init: λ is computed from parameters alone (the same at every step),
    so the difference is linear in the two softmax maps and needs no conversion.
    """

    def _init_heads(self, source: nn.Module, scale: float | None = None) -> None:
        """Take the heads' parts from ``source``; the scores' scale is its ``scale`` (1 if it has
        none) unless given."""
        scale = getattr(source, "scale", 1.0) if scale is None else scale
        self.q_norm = getattr(source, "q_norm", nn.Identity())
        self.k_norm = getattr(source, "k_norm", nn.Identity())
        # Operands are [B, heads, tokens, head_dim] (q, v), [B, heads, head_dim, tokens] (kᵀ) and
        # [B, heads, tokens, tokens] (attn); per-channel thresholds are per (head, head_dim) or per head.
        self.qk = Product("matmul", scale, channels_a=(-3, -1), channels_b=(-3, -2))
        self.softmax = nn.Softmax(dim=-1)
        self.attn_drop = getattr(source, "attn_drop", nn.Identity())
        self.av = Product("matmul", 1.0, channels_a=(-3,), channels_b=(-3, -1))
        self.differential = hasattr(source, "sub_norm")
        if self.differential:
            self.sub_norm, self.lambda_init = source.sub_norm, source.lambda_init
            for name in LAMBDAS:
                setattr(self, name, getattr(source, name))

    def heads(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
        """Each head's output, [B, heads, tokens, v's head_dim], from the normed q and k; ``bias``,
        a constant added to the scores (Swin's relative position bias and shift mask), is the same
        at every step, so it shifts the scores' rate by itself."""
        scores = self.qk(q, k.transpose(-2, -1))
        attn = self.attn_drop(self.softmax(scores if bias is None else scores + bias))
        if not self.differential:
            return self.av(attn, v)
        pairs = attn.unflatten(1, (-1, 2))
        # timm's own λ formula, on the parameters this twin shares with the original
        weight = DiffAttention._compute_lambda(self).type_as(q)
        return self.sub_norm(self.av(pairs[:, :, 0] - weight * pairs[:, :, 1], v)) * (1 - self.lambda_init)


class ExplicitAttention(SoftmaxHeads):
    """timm ``Attention`` with Q·Kᵀ, softmax, attn·V and the optional gate as separate modules.

    Shares the original's submodules (qkv, q_norm, k_norm, norm, gate, proj).
    """

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.head_dim = getattr(attn, "head_dim", None)  # BEiT's has none: its reshapes infer it
        self.qkv = attn.qkv
        self._init_heads(attn)
        self.norm = getattr(attn, "norm", nn.Identity())
        self.gate = getattr(attn, "gate", None)
        if self.gate is not None:
            self.gate_act = nn.Sigmoid()
            self.gating = Product("mul", 1.0, channels_a=(-1,), channels_b=(-1,))
        self.proj = attn.proj
        self.proj_drop = getattr(attn, "proj_drop", nn.Identity())  # DaViT's window attention has none
        # the children that read the attention's input x
        self.input_layers = ("qkv",) if self.gate is None else ("qkv", "gate")

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        refuse_mask(attn_mask, is_causal)
        q, k, v = split_qkv(self.qkv(x), self.num_heads)
        return self._attend(x, self.q_norm(q), self.k_norm(k), v)

    def _attend(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
        """Everything after q, k, v: the heads (with a constant ``bias`` on the scores), then norm,
        gate, projection."""
        batch, tokens, _ = x.shape
        out = self.norm(self.heads(q, k, v, bias).transpose(1, 2).reshape(batch, tokens, -1))
        if self.gate is not None:
            out = self.gating(out, self.gate_act(self.gate(x)))
        return self.proj_drop(self.proj(out))


class ExplicitDiffAttention(ExplicitAttention):
    """timm ``DiffAttention`` (``attn_layer="diff"``): twice the heads of half the size for q and
    k, one head of full size per pair for v, the differential heads of :class:`SoftmaxHeads`."""

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        refuse_mask(attn_mask, is_causal)
        q, k, v = self.qkv(x).chunk(3, dim=2)
        q, k, v = _split_heads(q, k, v, self.head_dim, self.num_heads)
        return self._attend(x, self.q_norm(q), self.k_norm(k), v)


def _split_heads(q: Tensor, k: Tensor, v: Tensor, head_dim: int, value_heads: int) -> tuple[Tensor, ...]:
    """[B, tokens, channels] to [B, heads, tokens, head_dim]: q and k in heads of ``head_dim``, v in
    ``value_heads`` heads (fewer and larger than q's for differential attention)."""
    batch, tokens, _ = q.shape
    q = q.reshape(batch, tokens, -1, head_dim).transpose(1, 2)
    k = k.reshape(batch, tokens, -1, head_dim).transpose(1, 2)
    return q, k, v.reshape(batch, tokens, value_heads, -1).transpose(1, 2)


class ExplicitRopeAttention(ExplicitAttention):
    """timm ``EvaAttention`` (EVA, EVA-02) and ``AttentionRope`` (PE, DINOv3, RoPE ViTs) as
    :class:`ExplicitAttention`, with what they add: q, k, v from one Linear (EVA: plus separate q
    and v biases, k has none) or from three; grouped-query attention (k and v heads repeated); and
    rotary position embeddings (RoPE) on the patch tokens' q and k. The last two are linear (a
    repetition, a rotation by constant angles) and need no conversion. Shares the original's
    parameters under their names.
    """

    def __init__(self, attn: nn.Module) -> None:
        super().__init__(attn)
        self.q_bias, self.v_bias = getattr(attn, "q_bias", None), getattr(attn, "v_bias", None)
        self.register_buffer("k_bias", getattr(attn, "k_bias", None), persistent=False)  # zeros in timm
        self.q_proj, self.k_proj, self.v_proj = attn.q_proj, attn.k_proj, attn.v_proj
        self.num_kv_heads = getattr(attn, "num_kv_heads", self.num_heads)
        self.num_prefix_tokens, self.rotate_half = attn.num_prefix_tokens, attn.rotate_half
        if self.qkv is None:
            self.input_layers = ("q_proj", "k_proj", "v_proj", *self.input_layers[1:])

    def forward(
        self, x: Tensor, rope: Tensor | None = None, attn_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        refuse_mask(attn_mask, is_causal)
        batch, tokens, _ = x.shape
        if self.qkv is not None:
            q, k, v = packed_qkv(self, x)
        else:
            q = self.q_proj(x).reshape(batch, tokens, self.num_heads, -1).transpose(1, 2)
            k = self.k_proj(x).reshape(batch, tokens, self.num_kv_heads, -1).transpose(1, 2)
            v = self.v_proj(x).reshape(batch, tokens, self.num_kv_heads, -1).transpose(1, 2)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = self._rotate(q, rope).type_as(v), self._rotate(k, rope).type_as(v)
        if self.num_kv_heads != self.num_heads:
            groups = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        return self._attend(x, q, k, v)

    def _rotate(self, x: Tensor, rope: Tensor) -> Tensor:
        """RoPE on the patch tokens (after the prefix tokens), as timm applies it."""
        prefix = self.num_prefix_tokens
        rotated = apply_rot_embed_cat(x[:, :, prefix:, :], rope, half=self.rotate_half)
        return torch.cat([x[:, :, :prefix, :], rotated], dim=2)


class ExplicitParallelBlock(SoftmaxHeads):
    """timm ``ParallelScalingBlock`` (ViT-22B) and ``DiffParallelScalingBlock``: the attention and
    the MLP side by side on one normed input, through one projection (``in_proj``: the MLP's hidden
    layer and q, k, v), written back to the residual stream through one projection of both
    (``out_proj``, on their concatenation) or one each. The attention as in :class:`SoftmaxHeads`,
    differential for ``DiffParallelScalingBlock``. Shares the original's parameters under their names.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.num_heads, self.head_dim = block.num_heads, block.head_dim
        self.in_norm, self.in_proj, self.in_split = block.in_norm, block.in_proj, block.in_split
        self.mlp_bias = block.mlp_bias
        self._init_heads(block)
        self.mlp_act, self.mlp_drop = block.mlp_act, block.mlp_drop
        self.out_proj = block.out_proj
        self.attn_out_proj = getattr(block, "attn_out_proj", None)
        self.mlp_out_proj = getattr(block, "mlp_out_proj", None)
        self.ls, self.drop_path = block.ls, block.drop_path

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        refuse_mask(attn_mask, is_causal)
        batch, tokens, _ = x.shape
        x_mlp, q, k, v = torch.split(self.in_proj(self.in_norm(x)), self.in_split, dim=-1)
        if self.mlp_bias is not None:  # the same bias at every step: its rate is itself
            x_mlp = x_mlp + self.mlp_bias
        q, k, v = _split_heads(q, k, v, self.head_dim, self.num_heads)
        x_attn = self.heads(self.q_norm(q), self.k_norm(k), v).transpose(1, 2).reshape(batch, tokens, -1)
        x_mlp = self.mlp_drop(self.mlp_act(x_mlp))
        if self.out_proj is not None:
            y = self.out_proj(torch.cat((x_attn, x_mlp), dim=-1))
        else:
            y = self.attn_out_proj(x_attn) + self.mlp_out_proj(x_mlp)
        return x + self.drop_path(self.ls(y))


class ExplicitAttentionPool(SoftmaxHeads):
    """timm ``AttentionPoolLatent`` (``global_pool="map"``) with Q·Kᵀ, softmax and attn·V as modules.

    The query is a learned latent token through ``q`` (an MT neuron before it, like before any
    Linear), the keys and values come from the tokens through ``kv``. Shares the original's
    parameters and submodules under their names (latent, pos_embed, q, kv, q_norm, k_norm, proj,
    norm, mlp).
    """

    def __init__(self, pool: AttentionPoolLatent) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.latent_len = pool.num_heads, pool.head_dim, pool.latent_len
        self.pool = pool.pool
        self.pos_embed = pool.pos_embed
        self.latent = pool.latent
        self.q, self.kv = pool.q, pool.kv
        self._init_heads(pool)
        self.proj, self.proj_drop, self.norm, self.mlp = pool.proj, pool.proj_drop, pool.norm, pool.mlp
        self.input_readers = ("kv",)  # the children that read the pooled tokens

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        refuse_mask(attn_mask)
        batch, tokens, channels = x.shape
        if self.pos_embed is not None:
            x = x + self.pos_embed.unsqueeze(0).to(x.dtype)
        q = self.q(self.latent.expand(batch, -1, -1))
        q = q.reshape(batch, self.latent_len, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(x).reshape(batch, tokens, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        out = self.heads(self.q_norm(q), self.k_norm(k), v)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, self.latent_len, channels)))
        if self.mlp is not None:
            out = out + self.mlp(self.norm(out))
        if self.pool == "token":
            return out[:, 0]
        return out.mean(1) if self.pool == "avg" else out


class ExplicitPrrPool(SoftmaxHeads):
    """timm ``AttentionPoolPrr`` (``global_pool="prr"``, Locality-Attending ViT): parameter-free
    self-attention of the tokens (q = k = v = the normed tokens, split into heads), a norm, then
    class-token or average pooling. Q·Kᵀ and attn·V multiply two spiking operands like any
    attention: each operand gets its MT neuron, even where two read the same tokens.
    """

    def __init__(self, pool: AttentionPoolPrr) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.pool = pool.num_heads, pool.head_dim, pool.pool
        self.pre_norm, self.post_norm = pool.pre_norm, pool.post_norm
        self._init_heads(pool)
        operands = ("qk.neuron_a", "qk.neuron_b", "av.neuron_b")
        self.input_readers = operands if isinstance(self.pre_norm, nn.Identity) else ("pre_norm",)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, channels = x.shape
        heads = self.pre_norm(x).reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)
        x = self.post_norm(self.heads(heads, heads, heads).transpose(1, 2).reshape(batch, tokens, channels))
        return x[:, 0] if self.pool == "token" else x.mean(1)


class ExplicitGluMlp(nn.Module):
    """timm ``GluMlp`` (SwiGLUPacked) or ``SwiGLU`` with the gating product act(gate)·value as a
    module, so that both factors get MT neurons and the product its EC (ECMT Theorem 4.2).

    Shares the original's submodules under their names (fc1, or fc1_g and fc1_x; act, norm, fc2).
    """

    def __init__(self, mlp: GluMlp | SwiGLU) -> None:
        super().__init__()
        self.split = isinstance(mlp, SwiGLU)  # gate and value from two Linears, not one chunked
        if self.split:
            self.fc1_g, self.fc1_x = mlp.fc1_g, mlp.fc1_x
            self.gate_last, self.chunk_dim = False, -1
        else:
            self.fc1 = mlp.fc1
            self.gate_last, self.chunk_dim = mlp.gate_last, mlp.chunk_dim
        channels = (-1,) if self.chunk_dim == -1 else (-3,)  # NCHW when timm uses 1x1 convolutions
        self.act = mlp.act
        self.gating = Product("mul", 1.0, channels_a=channels, channels_b=channels)
        self.drop1, self.norm, self.fc2, self.drop2 = mlp.drop1, mlp.norm, mlp.fc2, mlp.drop2
        self.input_layers = ("fc1_g", "fc1_x") if self.split else ("fc1",)

    def forward(self, x: Tensor) -> Tensor:
        if self.split:
            x = self.gating(self.act(self.fc1_g(x)), self.fc1_x(x))
        else:
            first, second = self.fc1(x).chunk(2, dim=self.chunk_dim)
            if self.gate_last:  # first · act(second)
                x = self.gating(first, self.act(second))
            else:
                x = self.gating(self.act(first), second)
        return self.drop2(self.fc2(self.norm(self.drop1(x))))


class TokenPool(nn.Module):
    """timm's global max or avg-max pooling over tokens (``global_pool="max"``, ``"avgmax"``), which
    ``VisionTransformer.pool`` computes with a function, as a module: converted, it is EC(pool), the
    max of the token rates, like any nonlinear module."""

    def __init__(self, pool_type: str, num_prefix_tokens: int, include_prefix: bool) -> None:
        super().__init__()
        self.pool_type, self.include_prefix = pool_type, include_prefix
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: Tensor) -> Tensor:
        return global_pool_nlc(x, self.pool_type, self.num_prefix_tokens, self.include_prefix)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"


class _PoolByModule:
    """``pool`` by the ``token_pool`` child (:class:`TokenPool`) instead of timm's function."""

    def pool(self, x: Tensor, pool_type: str | None = None) -> Tensor:
        if pool_type is None:
            return self.token_pool(x)
        return super().pool(x, pool_type)


class PooledVisionTransformer(_PoolByModule, VisionTransformer):
    """A ``VisionTransformer`` with max or avg-max pooling, pooled by a module (:func:`pool_twin`)."""


class PooledEva(_PoolByModule, Eva):
    """An ``Eva`` with max or avg-max pooling, pooled by a module (:func:`pool_twin`)."""


_POOLED = {VisionTransformer: PooledVisionTransformer, Eva: PooledEva}
LINEAR_POOLS = ("token", "avg", "")


def pool_twin(model: nn.Module) -> nn.Module:
    """The model itself, its pool made a module when it is nonlinear (max, avg-max): the class of
    this copy becomes a subclass whose ``pool`` calls a :class:`TokenPool` child (no parameters,
    so the keys stay the ANN's). Pools that are linear or modules already (attention pools) stay."""
    if model.attn_pool is not None or model.global_pool in LINEAR_POOLS:
        return model
    model.__class__ = _POOLED[type(model)]
    include_prefix = getattr(model, "pool_include_prefix", False)  # Eva never includes the prefix
    model.token_pool = TokenPool(model.global_pool, model.num_prefix_tokens, include_prefix)
    return model
