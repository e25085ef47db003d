"""Rules for timm Vision Transformers (VisionTransformer, DeiT and DeiT-distilled, Eva).

What is converted, following ECMT Algorithm 1:

- every Linear (qkv, proj, fc1, fc2, the heads, the attention gate, a parallel block's joint
  projections) gets an MT neuron before it;
- Q·Kᵀ and attn·V get an MT neuron on each operand and the product EC; the attention scale is
  folded into the product; so do the gating products of GLU MLPs (SwiGLU) and of gated attention;
- LayerNorm and RmsNorm (block norms, qk-norm, differential attention's sub-norm, final norm,
  fc_norm), GELU, SiLU, softmax and max or avg-max pooling over tokens become EC modules;
- attention pooling (``global_pool="map"``, SigLIP) is an attention whose query is a learned latent
  token: the latent goes through an MT neuron and ``q`` like any token; ``global_pool="prr"`` is a
  parameter-free self-attention of the tokens;
- differential attention (``attn_layer="diff"``) subtracts two softmax maps weighted by a λ
  computed from parameters: a linear combination, as are the parallel blocks' sums and splits;
- the patch embedding sees the image at every step (direct coding): its convolution stays analog,
  as in ECMT and most conversion work, and its output is the same at every step (a hybrid ViT's
  CNN stem is converted but for its first convolution: :mod:`transpike.rules.timm_cnn`);
- class, register and distillation tokens, position embeddings, rotary position embeddings (a
  rotation of q and k by constant angles), residual sums, LayerScale and class-token or average
  pooling are linear and need no change.

Modules that hide these operations are swapped for the explicit twins of
:mod:`transpike.rules.timm_twins`. This module says which twin each type gets, and where each
converted module's output goes (the links along which rates are handed on, :mod:`transpike.rates`).
"""

from __future__ import annotations

import itertools

from timm.layers import (
    Attention,
    AttentionPoolLatent,
    AttentionPoolPrr,
    AttentionRope,
    DiffAttention,
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
)
from timm.layers import activations as timm_act
from timm.layers import norm as timm_norm
from timm.models.deit import VisionTransformerDistilled
from timm.models.eva import Eva, EvaAttention, EvaBlock, EvaBlockPostNorm
from timm.models.vision_transformer import (
    Block,
    DiffParallelScalingBlock,
    ParallelScalingBlock,
    ParallelThingsBlock,
    ResPostBlock,
    VisionTransformer,
)
from torch import nn

from ..compensation import ExpectationCompensation
from ..neurons import MTNeuron
from . import Link, Role, register, rule_for
from .timm_cnn import embed_output
from .timm_twins import (
    ExplicitAttention,
    ExplicitAttentionPool,
    ExplicitDiffAttention,
    ExplicitGluMlp,
    ExplicitParallelBlock,
    ExplicitPrrPool,
    ExplicitRopeAttention,
    L2Normalize,
    PooledEva,
    PooledVisionTransformer,
    TokenPool,
    pool_twin,
)


def present(module: nn.Module | None) -> bool:
    """Whether ``module`` is there: neither None nor an Identity that a configuration left."""
    return module is not None and not isinstance(module, nn.Identity)


def _operand_readers(attn: nn.Module) -> tuple[str, str]:
    """Who reads q and k first: q_norm and k_norm when present, else Q·Kᵀ's operand neurons."""
    q = "q_norm" if present(attn.q_norm) else "qk.neuron_a"
    return q, "k_norm" if present(attn.k_norm) else "qk.neuron_b"


def _existing(container: nn.Module, links: list[Link]) -> list[Link]:
    """The links whose producers are present (not an Identity left by a configuration)."""
    return [
        (producer, readers)
        for producer, readers in links
        if all(present(container.get_submodule(path)) for path in _paths(producer))
    ]


def _paths(producer: str | tuple[str, ...]) -> tuple[str, ...]:
    return (producer,) if isinstance(producer, str) else producer


def chain(*paths: str) -> list[Link]:
    """Each of ``paths`` feeds only the next one."""
    return [(producer, (reader,)) for producer, reader in itertools.pairwise(paths)]


#: q and k through their norms into Q·Kᵀ, the scores to the softmax, the softmax into attn·V
#: (through differential attention's weighted difference, linear)
_SCORE_LINKS: list[Link] = [
    ("q_norm", ("qk.neuron_a",)),
    ("k_norm", ("qk.neuron_b",)),
    ("qk", ("softmax",)),
    ("softmax", ("av.neuron_a",)),
]


def _heads_output(attn: nn.Module) -> str:
    """The child whose output is the heads' (:meth:`SoftmaxHeads.heads`): attn·V, or after it
    differential attention's sub-norm, which attn·V then feeds."""
    return "sub_norm" if attn.differential else "av"


def _heads_links(attn: nn.Module) -> list[Link]:
    """Inside :meth:`SoftmaxHeads.heads`: the score links, and attn·V into the sub-norm."""
    return _SCORE_LINKS + (chain("av", "sub_norm") if attn.differential else [])


def attention_links(attn: ExplicitAttention) -> list[Link]:
    """Where each output goes in :meth:`ExplicitAttention.forward` (attn_drop, proj_drop and the
    reshapes are linear): q, k and v from qkv, through q_norm and k_norm when present; the heads;
    their output through norm (and the gate) to the projection."""
    q, k = _operand_readers(attn)
    to_proj = "proj" if attn.gate is None else "gating.neuron_a"
    if attn.qkv is not None:
        links = [("qkv", (q, k, "av.neuron_b"))]
    else:  # EVA-02's three projections
        links = [("q_proj", (q,)), ("k_proj", (k,)), ("v_proj", ("av.neuron_b",))]
    links += _heads_links(attn)
    links += chain(_heads_output(attn), *(["norm"] if present(attn.norm) else []), to_proj)
    if attn.gate is not None:
        links += [("gate", ("gate_act",)), ("gate_act", ("gating.neuron_b",)), ("gating", ("proj",))]
    return _existing(attn, links)


def _parallel_links(block: ExplicitParallelBlock) -> list[Link]:
    """ExplicitParallelBlock.forward: in_norm -> in_proj, whose output splits into the MLP's hidden
    layer (to its activation) and q, k, v; the heads and the activation into their projections, or
    both into the one projection of their concatenation (then both link or neither)."""
    q, k = _operand_readers(block)
    heads = _heads_output(block)
    links = [("in_norm", ("in_proj",)), ("in_proj", (q, k, "av.neuron_b", "mlp_act")), *_heads_links(block)]
    if block.out_proj is not None:
        links.append(((heads, "mlp_act"), ("out_proj",)))
    else:
        links += [(heads, ("attn_out_proj",)), ("mlp_act", ("mlp_out_proj",))]
    return _existing(block, links)


def _mlp_inputs(mlp: nn.Module) -> tuple[str, ...] | None:
    """The children of a block's MLP that read its input (a twin names them: GLU MLPs, ViTamin's
    GeGLU); None for an MLP of another kind."""
    if isinstance(mlp, Mlp):
        return ("fc1",)
    return getattr(mlp, "input_layers", None)


def _mlp_output(mlp: nn.Module) -> str:
    """The child of a block's MLP whose output is the MLP's: fc2, or the one a twin names
    (ViTamin's GeGLU: w2)."""
    return getattr(mlp, "output_layer", "fc2")


def feeds(norm: str, path: str, module: nn.Module) -> list[Link]:
    """``norm`` feeds only the input layers of the attention or MLP at ``path``."""
    inputs = module.input_layers if isinstance(module, ExplicitAttention) else _mlp_inputs(module)
    return [(norm, tuple(f"{path}.{name}" for name in inputs))] if inputs else []


def block_links(block: nn.Module) -> list[Link]:
    """Block.forward (also EvaBlock's, BEiT's): norm1 feeds only the attention's input layers,
    norm2 only the MLP's."""
    return feeds("norm1", "attn", block.attn) + feeds("norm2", "mlp", block.mlp)


def _parallel_things_links(block: ParallelThingsBlock) -> list[Link]:
    """ParallelThingsBlock.forward: in each branch (norm, attention or MLP, LayerScale, DropPath),
    the norm feeds only the attention's or the MLP's input layers."""
    links = []
    for index, (attn, ffn) in enumerate(zip(block.attns, block.ffns, strict=True)):
        links += feeds(f"attns.{index}.norm", f"attns.{index}.attn", attn.attn)
        links += feeds(f"ffns.{index}.norm", f"ffns.{index}.mlp", ffn.mlp)
    return links


def _to_fc2(mlp: nn.Module, producer: str) -> list[Link]:
    """From ``producer`` through the MLP's norm (when present) to fc2."""
    return chain(producer, *(["norm"] if present(mlp.norm) else []), "fc2")


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


def _prr_links(pool: ExplicitPrrPool) -> list[Link]:
    """ExplicitPrrPool.forward: pre_norm (when present) to the three operands, the scores as in
    any attention, attn·V to post_norm (when present)."""
    links = [("pre_norm", ("qk.neuron_a", "qk.neuron_b", "av.neuron_b")), *_SCORE_LINKS]
    if present(pool.post_norm):
        links.append(("av", ("post_norm",)))
    return _existing(pool, links)


def stream_ends(block: nn.Module) -> tuple[list[str], list[str]] | None:
    """Who writes the residual stream inside a pre-norm block (its last projections) and who reads
    it (its norms); None for a block that reads or writes it otherwise (post-norm blocks, unknown
    parts)."""
    if rule_for(block).links is block_links:  # x + attn(norm1(x)), then x + mlp(norm2(x))
        if isinstance(block.attn, ExplicitAttention) and _mlp_inputs(block.mlp) is not None:
            return ["attn.proj", f"mlp.{_mlp_output(block.mlp)}"], ["norm1", "norm2"]
    elif isinstance(block, ExplicitParallelBlock):
        writers = ["out_proj"] if block.out_proj is not None else ["attn_out_proj", "mlp_out_proj"]
        return writers, ["in_norm"]
    elif isinstance(block, ParallelThingsBlock):
        attns, ffns = range(len(block.attns)), range(len(block.ffns))
        if all(isinstance(branch.attn, ExplicitAttention) for branch in block.attns) and all(
            _mlp_inputs(branch.mlp) is not None for branch in block.ffns
        ):
            writers = [f"attns.{i}.attn.proj" for i in attns]
            writers += [f"ffns.{i}.mlp.{_mlp_output(block.ffns[i].mlp)}" for i in ffns]
            return writers, [f"attns.{i}.norm" for i in attns] + [f"ffns.{i}.norm" for i in ffns]
    return None


def _stream_links(vit: VisionTransformer) -> list[Link]:
    """The residual stream of pre-norm blocks: each converted block adds its branches' outputs
    (through LayerScale and DropPath, linear) to it, and only its norms read it; after the blocks,
    the first module that reads it (a block left analog by ``blocks=k``, the final norm, a pool,
    fc_norm, or the heads); before them, what the embedding writes (:func:`_embedding_writers`).
    Tokens and position embeddings add the same at every step, which is its own rate. One link for
    all: the stream is their sum."""
    producers, stream = _embedding_writers(vit), block_stream(vit.blocks, "blocks")
    if producers is None or stream is None:
        return []
    writers, readers, converted = stream
    producers += writers
    after = _stream_readers_after_blocks(vit, converted)
    if not producers or not after:  # nothing to hand on, or the stream is the model's output
        return []
    return [(tuple(producers), (*readers, *after))]


def block_stream(blocks: nn.Module, prefix: str) -> tuple[list[str], list[str], int] | None:
    """The residual stream through the converted ones of pre-norm ``blocks`` (at the path
    ``prefix``): who writes it (their last projections, :func:`stream_ends`), who reads it (their
    norms), and how many are converted (the rest left analog by ``blocks=k``); None where a block
    left analog sits between converted ones (it writes a stream of its own) or a converted block
    reads or writes it otherwise."""
    converted = converted_blocks(blocks)
    if converted is None:
        return None
    writers, readers = [], []
    for index, block in enumerate(blocks[:converted]):
        ends = stream_ends(block)
        if ends is None:
            return None
        writers += [f"{prefix}.{index}.{path}" for path in ends[0]]
        readers += [f"{prefix}.{index}.{path}" for path in ends[1]]
    return writers, readers, converted


def converted_blocks(blocks: nn.Module) -> int | None:
    """How many of ``blocks`` (from the first) are converted: the others are left analog by
    ``blocks=k``; None when one left analog sits between converted ones (it writes a stream of its
    own, so no stream links)."""
    analog = [isinstance(block, ExpectationCompensation) for block in blocks]
    converted = analog.index(True) if any(analog) else len(analog)
    return converted if all(analog[converted:]) else None


def _embedding_writers(vit: VisionTransformer) -> list[str] | None:
    """Who writes the stream before the blocks: norm_pre when present; else nobody when the patch
    embedding is direct coding alone (the same at every step: its own rate); else the
    embedding's output layer, fed by a hybrid's spiking CNN stem (:func:`~.timm_cnn.embed_output`), or
    None when the embedding ends in a layer that cannot hand on a rate."""
    if present(getattr(vit, "norm_pre", None)):  # BEiT has none
        return ["norm_pre"]
    name = "patch_embed" if hasattr(vit, "patch_embed") else "embeds"  # NaFlexVit's is ``embeds``
    embed = getattr(vit, name)
    if not any(isinstance(module, MTNeuron) for module in embed.modules()):
        return []
    output = embed_output(embed)
    return [f"{name}.{output}"] if output is not None else None


def _stream_readers_after_blocks(vit: VisionTransformer, converted: int) -> list[str]:
    """Who reads the stream after the first ``converted`` blocks: the next block (left analog),
    else the final norm, else the pool when it is a module (a max pool's EC, an attention pool's
    input layers), else fc_norm (after a linear pool), else the heads; none if a head is missing
    (the stream, pooled, is then the model's output)."""
    if converted < len(vit.blocks):
        return [f"blocks.{converted}"]
    if present(vit.norm):
        return ["norm"]
    for name in ("token_pool", "attn_pool"):
        pool = getattr(vit, name, None)
        if pool is not None:  # an attention pool left analog is an EC module, which takes rates
            return [f"{name}.{path}" for path in getattr(pool, "input_readers", ())] or [name]
    if present(vit.fc_norm):
        return ["fc_norm"]
    heads = [name for name in ("head", "head_dist") if hasattr(vit, name)]
    return heads if all(present(getattr(vit, name)) for name in heads) else []


def _head_links(vit: VisionTransformer) -> list[Link]:
    """After the stream's reader: the final norm, a max pool's module and fc_norm, those present,
    each feed only the next, and the last of them the heads (through token selection or average
    pooling and head_drop, linear). None past an attention pool (its output is a sum) or when a
    head is missing (the output is then theirs)."""
    heads = [name for name in ("head", "head_dist") if hasattr(vit, name)]
    if getattr(vit, "attn_pool", None) is not None or not all(present(getattr(vit, n)) for n in heads):
        return []
    order = [name for name in ("norm", "token_pool", "fc_norm") if present(getattr(vit, name, None))]
    return [*chain(*order), (order[-1], tuple(heads))] if order else []


def model_links(vit: nn.Module) -> list[Link]:
    """The residual stream and the head of a ViT (timm's VisionTransformer, Eva, Beit)."""
    return _stream_links(vit) + _head_links(vit)


register(Attention, Role.CONTAINER, twin=ExplicitAttention)
register(DiffAttention, Role.CONTAINER, twin=ExplicitDiffAttention)
for cls in (ExplicitAttention, ExplicitDiffAttention):
    register(cls, Role.CONTAINER, links=attention_links)
for cls in (VisionTransformer, Eva):  # a max or avg-max pool becomes a module
    register(cls, Role.CONTAINER, twin=pool_twin, links=model_links)
for cls in (PooledVisionTransformer, PooledEva, VisionTransformerDistilled):  # DeiT-distilled never pools
    register(cls, Role.CONTAINER, links=model_links)
for cls in (TokenPool, L2Normalize):
    register(cls, Role.NONLINEAR)
register(Block, Role.CONTAINER, links=block_links)
register(ResPostBlock, Role.CONTAINER)  # its norms feed the residual stream: no links
for cls in (ParallelScalingBlock, DiffParallelScalingBlock):
    register(cls, Role.CONTAINER, twin=ExplicitParallelBlock)
register(ExplicitParallelBlock, Role.CONTAINER, links=_parallel_links)
register(ParallelThingsBlock, Role.CONTAINER, links=_parallel_things_links)
for cls in (EvaAttention, AttentionRope):
    register(cls, Role.CONTAINER, twin=ExplicitRopeAttention)
register(ExplicitRopeAttention, Role.CONTAINER, links=attention_links)
register(EvaBlock, Role.CONTAINER, links=block_links)
register(EvaBlockPostNorm, Role.CONTAINER)
for cls in (RotaryEmbeddingCat, RotaryEmbeddingMixed, RotaryEmbeddingDinoV3):
    register(cls, Role.PASSTHROUGH)  # sin/cos tables from parameters and buffers, read by the attention
register(Mlp, Role.CONTAINER, links=_mlp_links)
for cls in (GluMlp, SwiGLU):
    register(cls, Role.CONTAINER, twin=ExplicitGluMlp)
register(ExplicitGluMlp, Role.CONTAINER, links=_glu_links)
register(AttentionPoolLatent, Role.CONTAINER, twin=ExplicitAttentionPool)
register(ExplicitAttentionPool, Role.CONTAINER, links=_pool_links)
register(AttentionPoolPrr, Role.CONTAINER, twin=ExplicitPrrPool)
register(ExplicitPrrPool, Role.CONTAINER, links=_prr_links)
register(PatchEmbed, Role.INPUT)
for cls in (LayerScale, DropPath, PatchDropout):
    register(cls, Role.PASSTHROUGH)
for cls in (timm_act.GELU, timm_act.GELUTanh, timm_act.QuickGELU, timm_norm.RmsNorm, timm_norm.LayerNorm):
    register(cls, Role.NONLINEAR)
