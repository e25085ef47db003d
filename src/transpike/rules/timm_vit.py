"""Rules for timm Vision Transformers (VisionTransformer, DeiT and DeiT-distilled, Eva).

What is converted, following ECMT Algorithm 1:

- every Linear (qkv, proj, fc1, fc2, the heads, the attention gate) gets an MT neuron before it;
- Q·Kᵀ and attn·V get an MT neuron on each operand and the product EC; the attention scale is
  folded into the product; so do the gating products of GLU MLPs (SwiGLU) and of gated attention;
- LayerNorm and RmsNorm (block norms, qk-norm, final norm, fc_norm), GELU, SiLU and softmax become
  EC modules;
- attention pooling (``global_pool="map"``, SigLIP) is an attention whose query is a learned latent
  token: the latent goes through an MT neuron and ``q`` like any token;
- the patch embedding sees the image at every step (direct coding): its convolution stays analog,
  as in ECMT and most conversion work, and its output is the same at every step;
- class, register and distillation tokens, position embeddings, rotary position embeddings (a
  rotation of q and k by constant angles), residual sums, LayerScale and class-token or average
  pooling are linear and need no change.

timm's ``Attention``, ``EvaAttention``, ``AttentionRope`` and ``AttentionPoolLatent`` call one fused
``scaled_dot_product_attention`` kernel whose internals no hook can reach, and the GLU MLPs
multiply two activations in their forward, so ``prepare`` swaps them for twins
(:class:`ExplicitAttention`, :class:`ExplicitRopeAttention`, :class:`ExplicitAttentionPool`,
:class:`ExplicitGluMlp`) that compute the same function with every product and nonlinearity as its
own module (whether or not timm would fuse it).
"""

from __future__ import annotations

import torch
from timm.layers import (
    Attention,
    AttentionPoolLatent,
    AttentionRope,
    DropPath,
    GluMlp,
    LayerScale,
    Mlp,
    PatchDropout,
    PatchEmbed,
    RotaryEmbeddingCat,
    RotaryEmbeddingDinoV3,
    RotaryEmbeddingMixed,
    SwiGLU,
    apply_rot_embed_cat,
)
from timm.layers import activations as timm_act
from timm.layers import norm as timm_norm
from timm.models.deit import VisionTransformerDistilled
from timm.models.eva import Eva, EvaAttention, EvaBlock, EvaBlockPostNorm
from timm.models.vision_transformer import Block, ResPostBlock, VisionTransformer
from torch import Tensor, nn

from ..compensation import ExpectationCompensation
from ..sites import Product
from . import Link, Role, register

LINEAR_POOLS = ("token", "avg", "")


class ExplicitAttention(nn.Module):
    """timm ``Attention`` with Q·Kᵀ, softmax, attn·V and the optional gate as separate modules.

    Shares the original's submodules (qkv, q_norm, k_norm, norm, gate, proj).
    """

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.head_dim = attn.head_dim
        self.attn_dim = getattr(attn, "attn_dim", attn.num_heads * attn.head_dim)
        self.qkv = attn.qkv
        self.q_norm = attn.q_norm
        self.k_norm = attn.k_norm
        # Operands are [B, heads, tokens, head_dim] (q, v), [B, heads, head_dim, tokens] (kᵀ) and
        # [B, heads, tokens, tokens] (attn); per-channel thresholds are per (head, head_dim) or per head.
        self.qk = Product("matmul", attn.scale, channels_a=(-3, -1), channels_b=(-3, -2))
        self.softmax = nn.Softmax(dim=-1)
        self.attn_drop = attn.attn_drop
        self.av = Product("matmul", 1.0, channels_a=(-3,), channels_b=(-3, -1))
        self.norm = getattr(attn, "norm", nn.Identity())
        self.gate = getattr(attn, "gate", None)
        if self.gate is not None:
            self.gate_act = nn.Sigmoid()
            self.gating = Product("mul", 1.0, channels_a=(-1,), channels_b=(-1,))
        self.proj = attn.proj
        self.proj_drop = attn.proj_drop
        # the children that read the attention's input x
        self.input_layers = ("qkv",) if self.gate is None else ("qkv", "gate")

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        _refuse_mask(attn_mask, is_causal)
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return self._attend(x, self.q_norm(q), self.k_norm(k), v)

    def _attend(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Everything after q, k, v: scores, softmax, attn·V, norm, gate, projection."""
        batch, tokens, _ = x.shape
        attn = self.attn_drop(self.softmax(self.qk(q, k.transpose(-2, -1))))
        out = self.av(attn, v).transpose(1, 2).reshape(batch, tokens, self.attn_dim)
        out = self.norm(out)
        if self.gate is not None:
            out = self.gating(out, self.gate_act(self.gate(x)))
        return self.proj_drop(self.proj(out))


def _refuse_mask(attn_mask: Tensor | None, is_causal: bool = False) -> None:
    if attn_mask is not None or is_causal:
        raise ValueError("attention masks are not supported by the converted attention")


class ExplicitRopeAttention(ExplicitAttention):
    """timm ``EvaAttention`` (EVA, EVA-02) and ``AttentionRope`` (PE, DINOv3, RoPE ViTs) as
    :class:`ExplicitAttention`, with what they add: q, k, v from one Linear (EVA: plus separate q
    and v biases, k has none) or from three; grouped-query attention (k and v heads repeated); and
    rotary position embeddings (RoPE) on the patch tokens' q and k. The last two are linear (a
    repetition, a rotation by constant angles) and need no conversion. Shares the original's
    parameters under their names.
    """

    def __init__(self, attn: EvaAttention | AttentionRope) -> None:
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
        _refuse_mask(attn_mask, is_causal)
        batch, tokens, _ = x.shape
        if self.qkv is not None:
            qkv = self.qkv(x)
            if self.q_bias is not None:  # the same bias at every step: its rate is itself
                qkv = qkv + torch.cat((self.q_bias, self.k_bias, self.v_bias))
            q, k, v = qkv.reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
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


class ExplicitAttentionPool(nn.Module):
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
        self.q_norm, self.k_norm = pool.q_norm, pool.k_norm
        # operands as in ExplicitAttention: [B, heads, latents or tokens, head_dim], kᵀ transposed
        self.qk = Product("matmul", pool.scale, channels_a=(-3, -1), channels_b=(-3, -2))
        self.softmax = nn.Softmax(dim=-1)
        self.av = Product("matmul", 1.0, channels_a=(-3,), channels_b=(-3, -1))
        self.proj, self.proj_drop, self.norm, self.mlp = pool.proj, pool.proj_drop, pool.norm, pool.mlp

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        _refuse_mask(attn_mask)
        batch, tokens, channels = x.shape
        if self.pos_embed is not None:
            x = x + self.pos_embed.unsqueeze(0).to(x.dtype)
        q = self.q(self.latent.expand(batch, -1, -1))
        q = q.reshape(batch, self.latent_len, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(x).reshape(batch, tokens, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        out = self.av(self.softmax(self.qk(q, k.transpose(-2, -1))), v)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, self.latent_len, channels)))
        if self.mlp is not None:
            out = out + self.mlp(self.norm(out))
        if self.pool == "token":
            return out[:, 0]
        return out.mean(1) if self.pool == "avg" else out


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


def _present(module: nn.Module) -> bool:
    return not isinstance(module, nn.Identity)


def _operand_readers(attn: nn.Module) -> tuple[str, str]:
    """Who reads q and k first: q_norm and k_norm when present, else Q·Kᵀ's operand neurons."""
    q = "q_norm" if _present(attn.q_norm) else "qk.neuron_a"
    return q, "k_norm" if _present(attn.k_norm) else "qk.neuron_b"


def _existing(container: nn.Module, links: list[Link]) -> list[Link]:
    """The links whose producer is present (not an Identity left by a configuration)."""
    return [(producer, readers) for producer, readers in links if _present(container.get_submodule(producer))]


#: q and k through their norms into Q·Kᵀ, the scores to the softmax, the softmax into attn·V
_SCORE_LINKS: list[Link] = [
    ("q_norm", ("qk.neuron_a",)),
    ("k_norm", ("qk.neuron_b",)),
    ("qk", ("softmax",)),
    ("softmax", ("av.neuron_a",)),
]


def _attention_links(attn: ExplicitAttention) -> list[Link]:
    """Where each output goes in :meth:`ExplicitAttention.forward` (attn_drop, proj_drop and the
    reshapes are linear): q, k and v from qkv, through q_norm and k_norm when present; the scores
    to the softmax; the softmax to attn·V; attn·V through norm (and the gate) to the projection."""
    q, k = _operand_readers(attn)
    to_proj = "proj" if attn.gate is None else "gating.neuron_a"
    if attn.qkv is not None:
        links = [("qkv", (q, k, "av.neuron_b"))]
    else:  # EVA-02's three projections
        links = [("q_proj", (q,)), ("k_proj", (k,)), ("v_proj", ("av.neuron_b",))]
    links += _SCORE_LINKS
    links += [("av", ("norm",) if _present(attn.norm) else (to_proj,)), ("norm", (to_proj,))]
    if attn.gate is not None:
        links += [("gate", ("gate_act",)), ("gate_act", ("gating.neuron_b",)), ("gating", ("proj",))]
    return _existing(attn, links)


def _mlp_inputs(mlp: nn.Module) -> tuple[str, ...] | None:
    """The children of a block's MLP that read its input; None for an MLP of another kind."""
    if isinstance(mlp, Mlp):
        return ("fc1",)
    return mlp.input_layers if isinstance(mlp, ExplicitGluMlp) else None


def _block_links(block: Block) -> list[Link]:
    """Block.forward: norm1 feeds only the attention's input layers, norm2 only the MLP's."""
    links = []
    if isinstance(block.attn, ExplicitAttention):
        links.append(("norm1", tuple(f"attn.{name}" for name in block.attn.input_layers)))
    mlp_inputs = _mlp_inputs(block.mlp)
    if mlp_inputs is not None:
        links.append(("norm2", tuple(f"mlp.{name}" for name in mlp_inputs)))
    return links


def _to_fc2(mlp: nn.Module, producer: str) -> list[Link]:
    """From ``producer`` through the MLP's norm (when present) to fc2."""
    if _present(mlp.norm):
        return [(producer, ("norm",)), ("norm", ("fc2",))]
    return [(producer, ("fc2",))]


def _mlp_links(mlp: Mlp) -> list[Link]:
    """Mlp.forward: fc1 -> act -> drop1 -> norm (when present) -> fc2."""
    return [("fc1", ("act",)), *_to_fc2(mlp, "act")]


def _glu_links(mlp: ExplicitGluMlp) -> list[Link]:
    """ExplicitGluMlp.forward: gate -> act -> one factor; value -> the other; product -> fc2.
    A chunked fc1 feeds both: its halves are views of its output."""
    if mlp.split:
        links = [("fc1_g", ("act",)), ("fc1_x", ("gating.neuron_b",)), ("act", ("gating.neuron_a",))]
    elif mlp.gate_last:
        links = [("fc1", ("gating.neuron_a", "act")), ("act", ("gating.neuron_b",))]
    else:
        links = [("fc1", ("act", "gating.neuron_b")), ("act", ("gating.neuron_a",))]
    return links + _to_fc2(mlp, "gating")


def _pool_links(pool: ExplicitAttentionPool) -> list[Link]:
    """ExplicitAttentionPool.forward: as in the attention, with the query from q (the latent's
    Linear) and keys and values from kv; the projection feeds both the norm and the residual sum."""
    q, k = _operand_readers(pool)
    links = [("q", (q,)), ("kv", (k, "av.neuron_b")), *_SCORE_LINKS, ("av", ("proj",))]
    if pool.mlp is not None:
        links.append(("norm", ("mlp.fc1",)))
    return _existing(pool, links)


def _stream_links(vit: VisionTransformer) -> list[Link]:
    """The residual stream of pre-norm blocks: each converted block adds its two branches' outputs
    (proj and fc2, through LayerScale and DropPath, linear) to it, and only its norms read it;
    after the blocks, the first module that reads it (a block left analog by ``blocks=k``, the
    final norm, fc_norm, or the heads). The patch embedding, tokens and position embeddings add the
    same at every step, which is its own rate. One link for all: the stream is their sum."""
    producers, readers = ["norm_pre"] if _present(vit.norm_pre) else [], []
    analog = [isinstance(block, ExpectationCompensation) for block in vit.blocks]
    converted = analog.index(True) if any(analog) else len(analog)
    if not all(analog[converted:]):
        return []  # a block left analog between converted ones writes a stream of its own
    for index, block in enumerate(vit.blocks[:converted]):
        pre_norm = type(block) in (Block, EvaBlock) and isinstance(block.attn, ExplicitAttention)
        if not pre_norm or _mlp_inputs(block.mlp) is None:
            return []  # post-norm blocks (ResPostBlock) read and write the stream otherwise
        producers += [f"blocks.{index}.attn.proj", f"blocks.{index}.mlp.fc2"]
        readers += [f"blocks.{index}.norm1", f"blocks.{index}.norm2"]
    after = _stream_readers_after_blocks(vit, converted)
    if not producers or not after:  # nothing to hand on, or the stream is the model's output
        return []
    return [(tuple(producers), (*readers, *after))]


def _stream_readers_after_blocks(vit: VisionTransformer, converted: int) -> list[str]:
    """Who reads the stream after the first ``converted`` blocks: the next block (left analog),
    else the final norm, else fc_norm (after a linear pool), else the heads; none if a head is
    missing (the stream, pooled, is then the model's output)."""
    if converted < len(vit.blocks):
        return [f"blocks.{converted}"]
    for name in ("norm", "fc_norm"):
        if _present(getattr(vit, name)):
            return [name]
    heads = [name for name in ("head", "head_dist") if hasattr(vit, name)]
    return heads if all(_present(getattr(vit, name)) for name in heads) else []


def _check_pool(model: nn.Module) -> str | None:
    """A pool computed inside forward() must be linear; an attention pool ("map") is a module."""
    if getattr(model, "attn_pool", None) is None and model.global_pool not in LINEAR_POOLS:
        return (
            f"global_pool={model.global_pool!r} is computed by a nonlinear function inside forward(); "
            f"supported pools are {(*LINEAR_POOLS, 'map')}"
        )
    return None


register(Attention, Role.CONTAINER, twin=ExplicitAttention)
register(ExplicitAttention, Role.CONTAINER, links=_attention_links)
register(VisionTransformer, Role.CONTAINER, check=_check_pool, links=_stream_links)
register(VisionTransformerDistilled, Role.CONTAINER, check=_check_pool, links=_stream_links)
register(Block, Role.CONTAINER, links=_block_links)
register(ResPostBlock, Role.CONTAINER)  # its norms feed the residual stream: no links
for cls in (EvaAttention, AttentionRope):
    register(cls, Role.CONTAINER, twin=ExplicitRopeAttention)
register(ExplicitRopeAttention, Role.CONTAINER, links=_attention_links)
register(Eva, Role.CONTAINER, check=_check_pool, links=_stream_links)
register(EvaBlock, Role.CONTAINER, links=_block_links)
register(EvaBlockPostNorm, Role.CONTAINER)
for cls in (RotaryEmbeddingCat, RotaryEmbeddingMixed, RotaryEmbeddingDinoV3):
    register(cls, Role.PASSTHROUGH)  # sin/cos tables from parameters and buffers, read by the attention
register(Mlp, Role.CONTAINER, links=_mlp_links)
for cls in (GluMlp, SwiGLU):
    register(cls, Role.CONTAINER, twin=ExplicitGluMlp)
register(ExplicitGluMlp, Role.CONTAINER, links=_glu_links)
register(AttentionPoolLatent, Role.CONTAINER, twin=ExplicitAttentionPool)
register(ExplicitAttentionPool, Role.CONTAINER, links=_pool_links)
register(PatchEmbed, Role.INPUT)
for cls in (LayerScale, DropPath, PatchDropout):
    register(cls, Role.PASSTHROUGH)
for cls in (timm_act.GELU, timm_act.GELUTanh, timm_act.QuickGELU, timm_norm.RmsNorm, timm_norm.LayerNorm):
    register(cls, Role.NONLINEAR)
