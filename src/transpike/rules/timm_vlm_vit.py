"""Rules for timm's vision towers of Qwen3-VL (``qwen3_vit_*``) and DeepSeek-V4 (``deepseek_vit_*``).

Both are pre-norm ViTs inside an encoder (``encoder.blocks``) that a classifier wraps with a mean
pool over the patch tokens, a norm and a Linear head. Qwen3's blocks are timm's EVA blocks (fused
qkv with bias, GELU-tanh MLP, axial rotary embeddings) after a learned position grid resampled to
the input's grid (from the parameter alone: a constant added to the patch embedding); DeepSeek's
are the same attention with RMSNorm and a bias-free SwiGLU MLP, and no position embedding but the
rotary one, with a final RMSNorm. Optionally (``encoder_pool='merge'`` / ``'align'``, the
``_merge`` / ``_align`` models and the ``_enc`` encoders) the VLM's projector runs before the
pool: a pixel unshuffle of k × k tokens (a reshape, with zero padding in DeepSeek's), then an MLP
(Qwen3: LayerNorm first). The patch embedding's projection reads the image (direct coding).

Everything here converts with rules from elsewhere; this module registers the containers, the
classifiers' blocks for ``blocks=k`` and their rate links: the residual stream as in a ViT, then
the modules after the blocks, each feeding only the next.
"""

from __future__ import annotations

from timm.layers import RmsNormFp32
from timm.models import deepseek_vit, qwen3_vit
from torch import nn

from ..compensation import ExpectationCompensation
from . import Link, Role, register
from .timm_vit import block_links, block_stream, chain, present

Classifier = qwen3_vit.Qwen3VitClassifier | deepseek_vit.DeepseekVitClassifier
#: the encoders' VLM projectors, by attribute, and their parts in forward order
PROJECTORS = {"merger": ("norm", "fc1", "act", "fc2"), "aligner": ("fc1", "act", "fc2")}


def encoder_blocks(model: nn.Module) -> list[str]:
    """The blocks of a classifier's ``encoder`` (the VLM towers' and Gemma 4's), for ``blocks=k``."""
    return [f"encoder.blocks.{index}" for index in range(len(model.encoder.blocks))]


def _after_blocks(model: Classifier) -> list[str]:
    """The modules that follow the blocks in forward order, each reading only the one before it
    (the pixel unshuffle, the mean pool and head_drop between them are linear)."""
    encoder = model.encoder
    paths = ["encoder.norm"] if present(getattr(encoder, "norm", None)) else []
    for name, parts in PROJECTORS.items():
        projector = getattr(encoder, name, None)
        if isinstance(projector, ExpectationCompensation):  # left analog by blocks=k: one module
            paths.append(f"encoder.{name}")
        elif projector is not None:
            paths += [f"encoder.{name}.{part}" for part in parts if present(projector.get_submodule(part))]
    return paths + [name for name in ("norm", "head") if present(getattr(model, name))]


def _classifier_links(model: Classifier) -> list[Link]:
    """The residual stream of the converted blocks (their last projections write it, their norms
    and the first module after them read it; the patch embedding adds the same at every step) and
    the chain after the blocks; none when the head is missing (the output is then the tokens')."""
    if not present(model.head):
        return []
    blocks, after = model.encoder.blocks, _after_blocks(model)
    stream = block_stream(blocks, "encoder.blocks")
    if stream is None or not stream[0]:  # no stream links, or no converted block to write it
        return chain(*after)
    writers, readers, converted = stream
    first = f"encoder.blocks.{converted}" if converted < len(blocks) else after[0]
    return [(tuple(writers), (*readers, first)), *chain(*after)]


for cls in (qwen3_vit.Qwen3VitClassifier, deepseek_vit.DeepseekVitClassifier):
    register(cls, Role.CONTAINER, links=_classifier_links, blocks=encoder_blocks)
for cls in (qwen3_vit.Qwen3VitEncoder, deepseek_vit.DeepseekVitEncoder):
    register(cls, Role.CONTAINER)  # the _enc models: tokens out, no rate links
for cls in (qwen3_vit.Qwen3VitPatchMerger, deepseek_vit.DeepseekVitAligner):
    register(cls, Role.CONTAINER)  # a reshape, then an MLP
register(deepseek_vit.DeepseekVitBlock, Role.CONTAINER, links=block_links)  # an EVA block's forward
register(RmsNormFp32, Role.NONLINEAR)  # RMSNorm computed in float32
