"""Rules for the Vision Transformers of Hugging Face transformers (version 5.18 on): ViT
(``ViTForImageClassification``), DeiT (``DeiTForImageClassification`` and the distilled
``DeiTForImageClassificationWithTeacher``), DINOv2, with or without registers
(``Dinov2ForImageClassification``, ``Dinov2WithRegistersForImageClassification``), ViT-MSN,
I-JEPA, CLIP, MetaCLIP 2, SigLIP, SigLIP 2, Swin and Donut's Swin (``ViTMSNForImageClassification``,
``IJepaForImageClassification``, ``CLIPForImageClassification``,
``MetaClip2ForImageClassification``, ``SiglipForImageClassification``,
``Siglip2ForImageClassification``, ``SwinForImageClassification``,
``DonutSwinForImageClassification``).

transformers hides two things from a converter: its attention runs a function chosen by the
configuration (eager, SDPA, flash), and its models return output objects through decorators that
record hidden states. So each attention is swapped for a twin with Q·Kᵀ, softmax and attn·V as
modules, DINOv2's SwiGLU feed-forward for one with its gating product as a module, and the
classifier for the same object under a subclass (:data:`LOGITS`) whose forward runs the embeddings,
the layers, the norms and the readout and returns the logits, with every submodule under its own
name (the ANN's state dict keys). transformers' activation modules become EC modules; DINOv2's
LayerScale and DropPath are linear in evaluation.

The patch projection sees the image at every step (direct coding). The class token (and DeiT's
distillation token, DINOv2's registers), the position embeddings (CLIP's and SigLIP's looked up
from constant ids), the residual sums, LayerScale, the token selection and the means over tokens
are linear and the same at every step, so the whole network is one rate link from the patch
projection to the classifiers (:mod:`transpike.rules.links`); in Swin, so are the padding, the
cyclic shift, the window partition and patch merging, and the relative position bias and the shifted
windows' mask are constants added to the scores. ``blocks=k`` counts the layers (Swin's stage by
stage).

SigLIP 2's NaFlex form takes images as sequences of patches with a mask and each image's grid, so
that images of any aspect ratio share a batch. Its logits form takes images of one size, as every
other model here does: it cuts them into patches in the order SigLIP 2's image processor does, on
the full grid (no padding, so no mask), and the position embeddings are resized to that grid, a
constant.

The twins, the logits form and the registration here serve the families in :mod:`.hf_beit` (BEiT,
Data2Vec-vision), :mod:`.hf_cvt` (CvT), :mod:`.hf_focalnet` (FocalNet), :mod:`.hf_hiera` (Hiera),
:mod:`.hf_levit` (LeViT), :mod:`.hf_mobilevit` (MobileViT, MobileViT v2), :mod:`.hf_poolformer`
(PoolFormer), :mod:`.hf_pvt` (PVT, PVT v2, SegFormer), :mod:`.hf_swiftformer` (SwiftFormer) and
:mod:`.hf_swinv2` (Swin V2) too, which this module imports at its end: whoever imports it has
every rule for transformers and every classifier in :data:`LOGITS`. It imports transformers, which
takes seconds, so :func:`transpike.rules.rule_for` loads it only when it first meets a module of
transformers.
"""

from __future__ import annotations

import copy
import math
from types import ModuleType

import torch
import transformers
from packaging.version import Version
from timm.models.swin_transformer import WindowAttention
from torch import Tensor, nn
from transformers import activations
from transformers.models.clip import modeling_clip as clip
from transformers.models.deit import modeling_deit as deit
from transformers.models.dinov2 import modeling_dinov2 as dinov2
from transformers.models.dinov2_with_registers import modeling_dinov2_with_registers as dinov2_registers
from transformers.models.donut import modeling_donut_swin as donut
from transformers.models.ijepa import modeling_ijepa as ijepa
from transformers.models.metaclip_2 import modeling_metaclip_2 as metaclip_2
from transformers.models.siglip import modeling_siglip as siglip
from transformers.models.siglip2 import modeling_siglip2 as siglip2
from transformers.models.swin import modeling_swin as swin
from transformers.models.vit import modeling_vit as vit
from transformers.models.vit_msn import modeling_vit_msn as vit_msn

from ..sites import Product
from . import Link, Role, register
from .links import link_all
from .timm_swin import with_mask
from .timm_twins import SoftmaxHeads, refuse_mask

#: the first release with these models' present layout (q_proj ... o_proj, DINOv2's included)
MINIMUM = "5.18"
if Version(transformers.__version__) < Version(MINIMUM):
    raise ImportError(
        f"transformers {transformers.__version__}: transpike converts the models of transformers "
        f">= {MINIMUM} (pip install 'transformers>={MINIMUM}')"
    )


class ExplicitHFAttention(SoftmaxHeads):
    """transformers' ViT, DeiT, DINOv2, CLIP and SigLIP attention with Q·Kᵀ, softmax and attn·V as
    modules: q, k and v from ``q_proj``, ``k_proj`` and ``v_proj`` (:attr:`projections`), each head
    softmax(q·kᵀ·scale)·v, then the output projection, ``o_proj`` (``out_proj`` in CLIP and
    SigLIP), under its own name (eager_attention_forward in ``modeling_vit``). Returns (output,
    None): no attention weights are kept, as the layers ask for none."""

    #: the names of the q, k and v projections (the earlier layout's are ``query``, ``key``, ``value``)
    projections = ("q_proj", "k_proj", "v_proj")

    def __init__(self, attn: nn.Module, scale: float | None = None) -> None:
        super().__init__()
        self.head_dim = getattr(attn, "head_dim", None) or attn.attention_head_size
        for name in self.projections:
            setattr(self, name, getattr(attn, name))
        self._init_heads(attn, scale=scale or getattr(attn, "scaling", None) or attn.scale)
        # the earlier layout's self-attention has none: its output projection is a sibling module
        self.output_name = next((name for name in ("o_proj", "out_proj") if hasattr(attn, name)), None)
        if self.output_name is not None:
            setattr(self, self.output_name, getattr(attn, self.output_name))

    def forward(
        self, hidden_states: Tensor, attention_mask: Tensor | None = None, **_
    ) -> tuple[Tensor, None]:  # CLIP's and SigLIP's layers pass hidden_states by name
        heads = self.attend(hidden_states, self.scores_bias(attention_mask, hidden_states.shape[0]))
        return getattr(self, self.output_name)(heads), None

    def attend(self, hidden_states: Tensor, bias: Tensor | None, keys_from: Tensor | None = None) -> Tensor:
        """The heads' outputs side by side, [..., tokens, heads·head_dim], for the tokens
        ``hidden_states``, the constant ``bias`` added to the scores, and k and v from the tokens
        ``keys_from`` (PVT v2's and SegFormer's spatially reduced ones) or from ``hidden_states``."""
        keys_from = hidden_states if keys_from is None else keys_from
        q, k, v = (
            getattr(self, name)(tokens).unflatten(-1, (-1, self.head_dim)).transpose(1, 2)
            for name, tokens in zip(self.projections, (hidden_states, keys_from, keys_from), strict=True)
        )
        q, k = self.normed(q, k)
        return self.heads(q, k, v, bias).transpose(1, 2).flatten(-2)

    def normed(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """q and k as the scores read them: through ``q_norm`` and ``k_norm`` (identities here)."""
        return self.q_norm(q), self.k_norm(k)

    def scores_bias(self, attention_mask: Tensor | None, batch: int) -> Tensor | None:
        """The constant added to the scores: none (a ViT's classifier passes no attention mask)."""
        refuse_mask(attention_mask)
        return None


class ExplicitSwinAttention(ExplicitHFAttention):
    """transformers' Swin window attention: the heads of :class:`ExplicitHFAttention` with two
    constants added to the scores, the relative position bias (``relative_position_bias``, a
    module that reads only its table) and, in shifted windows, the mask the layer builds from the
    windows' geometry (``attention_mask``, one per window, repeated over the batch)."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__(attn)
        self.relative_position_bias = attn.relative_position_bias

    def scores_bias(self, attention_mask: Tensor | None, windows: int) -> Tensor:
        # the bias [1, heads, area, area]; the mask [windows per image, area, area], the same for every
        # image of the batch
        return with_mask(self.relative_position_bias(), attention_mask, windows)


class ExplicitDonutSwinAttention(ExplicitHFAttention):
    """Donut's Swin window self-attention, Swin's in transformers' earlier layout: q, k, v from
    ``query``, ``key``, ``value``, the relative position bias gathered from its table as timm's
    Swin gathers it, plus the shifted windows' mask; returns (heads,), as the output projection is
    the sibling ``output.dense``."""

    projections = ("query", "key", "value")

    def __init__(self, attn: nn.Module) -> None:
        super().__init__(attn, scale=attn.attention_head_size**-0.5)
        self.window_area = attn.window_size[0] * attn.window_size[1]
        self.relative_position_bias_table = attn.relative_position_bias_table
        self.register_buffer("relative_position_index", attn.relative_position_index)  # saved by Donut

    def forward(
        self, hidden_states: Tensor, attention_mask: Tensor | None = None, output_attentions: bool = False
    ) -> tuple[Tensor]:
        bias = with_mask(WindowAttention._get_rel_pos_bias(self), attention_mask, hidden_states.shape[0])
        return (self.attend(hidden_states, bias),)


class ExplicitSwiGLUFFN(nn.Module):
    """DINOv2's SwiGLU feed-forward, down_proj(SiLU(gate_proj(x)) · up_proj(x)), with the product
    as a module, so that both factors get MT neurons and the product its EC (ECMT Theorem 4.2)."""

    def __init__(self, ffn: nn.Module) -> None:
        super().__init__()
        self.gate_proj, self.up_proj, self.act_fn = ffn.gate_proj, ffn.up_proj, ffn.act_fn
        self.down_proj = ffn.down_proj
        self.gating = Product("mul", 1.0, channels_a=(-1,), channels_b=(-1,))

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.gating(self.act_fn(self.gate_proj(x)), self.up_proj(x)))


def _layers(classifier: _Logits) -> tuple[str, nn.ModuleList]:
    """The path and the list of a classifier's Transformer layers (``layers`` in ViT and DeiT,
    ``encoder.layer`` in DINOv2, ``encoder.layers`` in CLIP and SigLIP; the stages in Swin, PVT,
    PVT v2, SegFormer, CvT, PoolFormer, FocalNet and Hiera)."""
    for inside in ("layers", "encoder.layer", "encoder.layers", "stages", "encoder.stages", "encoder.block"):
        path = f"{classifier.backbone_name}.{inside}"
        try:
            layers = classifier.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList):
            return path, layers
    raise ValueError(f"{type(classifier).__name__}: no list of Transformer layers found")


class _Logits:
    """An image classifier of transformers whose forward returns the logits, computed explicitly:
    the tokens its readout reads (:meth:`tokens`), then the readout."""

    #: whether the layers come in stages, which ``blocks=k`` counts in turn: each stage's list named
    #: :attr:`stage_layers`, or the stage itself where that is None (PVT's, PoolFormer's)
    staged = False
    stage_layers: str | None = "blocks"

    @property
    def backbone_name(self) -> str:
        """The attribute holding the Transformer (``vit``, ``deit``, ``dinov2``, ...)."""
        return self.base_model_prefix

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.readout(self.tokens(pixel_values))

    def tokens(self, pixel_values: Tensor) -> Tensor:
        """ViT, DeiT, DINOv2, ViT-MSN, I-JEPA: embeddings, layers, the final LayerNorm."""
        backbone = getattr(self, self.backbone_name)
        return backbone.layernorm(self.layers(backbone.embeddings(pixel_values)))

    def layers(self, hidden: Tensor) -> Tensor:
        for layer in _layers(self)[1]:
            hidden = layer(hidden, None)  # no attention mask (CLIP's layers require the argument)
        return hidden

    def readout(self, tokens: Tensor) -> Tensor:
        """ViT, DeiT, ViT-MSN: the classifier on the class token."""
        return self.classifier(tokens[:, 0])

    def block_paths(self) -> list[str]:
        """The Transformer blocks ``blocks=k`` counts: the layers, or each stage's layers in turn."""
        path, layers = _layers(self)
        if self.staged:
            name = self.stage_layers
            inside = f".{name}" if name else ""
            stages = [getattr(stage, name) if name else stage for stage in layers]
            return [f"{path}.{s}{inside}.{b}" for s, blocks in enumerate(stages) for b in range(len(blocks))]
        return [f"{path}.{index}" for index in range(len(layers))]


class _TokenMean(_Logits):
    def readout(self, tokens: Tensor) -> Tensor:
        """I-JEPA, SigLIP: the classifier on the mean of the tokens."""
        return self.classifier(tokens.mean(dim=1))


class ViTLogits(_Logits, vit.ViTForImageClassification):
    pass


class DeiTLogits(_Logits, deit.DeiTForImageClassification):
    pass


class DeiTWithTeacherLogits(_Logits, deit.DeiTForImageClassificationWithTeacher):
    def readout(self, tokens: Tensor) -> Tensor:
        """The mean of the class token's and the distillation token's classifiers."""
        return (self.cls_classifier(tokens[:, 0]) + self.distillation_classifier(tokens[:, 1])) / 2


class _ClassAndPatchMean(_Logits):
    def readout(self, tokens: Tensor) -> Tensor:
        """DINOv2: the classifier on the class token next to the mean of the patch tokens (the
        register tokens, where there are some, in neither)."""
        patches = tokens[:, 1 + getattr(self.config, "num_register_tokens", 0) :]
        return self.classifier(torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=1))


class Dinov2Logits(_ClassAndPatchMean, dinov2.Dinov2ForImageClassification):
    pass


class ViTMSNLogits(_Logits, vit_msn.ViTMSNForImageClassification):
    pass


class IJepaLogits(_TokenMean, ijepa.IJepaForImageClassification):
    pass


class _CLIPForm(_Logits):
    backbone_name = "vision_model"

    def tokens(self, pixel_values: Tensor) -> Tensor:
        """CLIP, MetaCLIP 2: embeddings, the LayerNorm before the layers, the layers (the vision
        model's last LayerNorm only norms its pooled output, which the classifier does not read)."""
        backbone = self.vision_model
        return self.layers(backbone.pre_layrnorm(backbone.embeddings(pixel_values)))

    def readout(self, tokens: Tensor) -> Tensor:
        """The classifier on the mean of the patch tokens."""
        return self.classifier(tokens[:, 1:].mean(dim=1))


class CLIPLogits(_CLIPForm, clip.CLIPForImageClassification):
    pass


class MetaClip2Logits(_CLIPForm, metaclip_2.MetaClip2ForImageClassification):
    pass


class _Pooled(_Logits):
    #: ``blocks=k`` counts the layers stage by stage
    staged = True

    def readout(self, tokens: Tensor) -> Tensor:
        """Swin, Swin V2: the classifier on the mean of the tokens (the model's pooler, an average
        pool)."""
        pooler = getattr(self, self.backbone_name).pooler
        return self.classifier(pooler(tokens.transpose(1, 2)).flatten(1))


class SwinLogits(_Pooled, swin.SwinForImageClassification):
    def tokens(self, pixel_values: Tensor) -> Tensor:
        """Embeddings (patches and their LayerNorm), the stages (each a list of layers, then patch
        merging but in the last, which halves the grid), the final LayerNorm."""
        hidden, grid = self.swin.embeddings(pixel_values)
        for stage in self.swin.encoder.layers:
            hidden, spatial, _ = stage(hidden, grid)  # spatial: the stage's output as a [B, C, H, W] map
            grid = tuple(spatial.shape[-2:])
        return self.swin.layernorm(hidden)


class DonutSwinLogits(_Pooled, donut.DonutSwinForImageClassification):
    def tokens(self, pixel_values: Tensor) -> Tensor:
        """Embeddings, the stages (Swin's; no LayerNorm after the last)."""
        return self.donut.encoder(*self.donut.embeddings(pixel_values), return_dict=False)[0]


class SiglipLogits(_TokenMean, siglip.SiglipForImageClassification):
    backbone_name = "vision_model"

    def tokens(self, pixel_values: Tensor) -> Tensor:
        """Embeddings, layers, the last LayerNorm (the attention-pooling head, which the vision
        model computes, the classifier does not read)."""
        backbone = self.vision_model
        return backbone.post_layernorm(self.layers(backbone.embeddings(pixel_values)))


def patches(images: Tensor, size: int) -> Tensor:
    """Images [B, C, H, W] as SigLIP 2's image processor cuts them: [B, (H/size)·(W/size),
    size·size·C], the patches row by row, each patch's pixels row by row with their channels last."""
    batch, channels, height, width = images.shape
    grid = images.reshape(batch, channels, height // size, size, width // size, size)
    return grid.permute(0, 2, 4, 3, 5, 1).reshape(batch, (height // size) * (width // size), -1)


def image_from_patches(sequence: Tensor, grid: tuple[int, int], size: int) -> Tensor:
    """The image [C, rows·size, columns·size] whose :func:`patches` are the first rows·columns of
    ``sequence`` [patches, size·size·C] (SigLIP 2's processor pads the sequence after them)."""
    rows, columns = grid
    cut = sequence[: rows * columns].reshape(rows, columns, size, size, -1)
    return cut.permute(4, 0, 2, 1, 3).reshape(-1, rows * size, columns * size)


class Siglip2Logits(_TokenMean, siglip2.Siglip2ForImageClassification):
    backbone_name = "vision_model"

    @property
    def image_size(self) -> int:
        """The square image whose grid holds the most patches the configuration has position
        embeddings for (its processor's ``max_num_patches``: 256 patches of 16 px, 256 px)."""
        vision = self.config.vision_config
        return vision.patch_size * math.isqrt(vision.num_patches)

    def tokens(self, pixel_values: Tensor) -> Tensor:
        """The images as patches, their embeddings with the position embeddings resized to the
        grid, the layers, the last LayerNorm (the attention-pooling head the classifier does not
        read, as SigLIP's)."""
        size, backbone = self.config.vision_config.patch_size, self.vision_model
        # each image's grid, filled in rather than read from a list: made from no tensor, it is a
        # constant to the audit, as are the resizing weights computed from it
        grid = torch.empty(pixel_values.shape[0], 2, dtype=torch.long, device=pixel_values.device)
        grid[:, 0], grid[:, 1] = (side // size for side in pixel_values.shape[-2:])
        hidden = backbone.embeddings(patches(pixel_values, size), grid)
        return backbone.post_layernorm(self.layers(hidden))


class Dinov2WithRegistersLogits(
    _ClassAndPatchMean, dinov2_registers.Dinov2WithRegistersForImageClassification
):
    pass


#: each supported classifier of transformers and its subclass that returns the logits
LOGITS: dict[type, type] = {}


def logits_model(model: nn.Module) -> nn.Module:
    """``model`` (a supported transformers image classifier) as a module whose forward takes the
    images and returns the logits: a shallow copy under the :data:`LOGITS` subclass, sharing every
    submodule and parameter with ``model``, which is left as it is. Its ANN accuracy, and the ANN
    that ``transpike.evaluate`` compares the SNN with, come from this form."""
    if isinstance(model, _Logits):
        return model
    if type(model) not in LOGITS:
        known = ", ".join(sorted(cls.__name__ for cls in LOGITS))
        raise ValueError(f"{type(model).__name__}: not a supported transformers image classifier ({known})")
    view = copy.copy(model)
    view.__class__ = LOGITS[type(model)]
    return view


def _as_logits(model: nn.Module) -> nn.Module:
    """The classifier itself (``prepare`` works on a copy) under its logits subclass, its backbone
    marked as run by it (:func:`_headless`)."""
    model.__class__ = LOGITS.get(type(model), type(model))
    getattr(model, model.backbone_name).in_classifier = True
    return model


def _headless(backbone: nn.Module) -> str | None:
    """Why a backbone cannot convert on its own: its forward returns an output object, not a
    tensor. Inside a classifier's logits form only its parts run."""
    if getattr(backbone, "in_classifier", False):
        return None
    known = ", ".join(sorted(cls.__name__ for cls in LOGITS))
    return f"a transformers backbone without its classifier is not converted; convert one of {known}"


def _network_links(model: _Logits) -> list[Link]:
    """One link from the patch projection to the classifiers (SwiftFormer's two heads), which emit
    the increments the simulation averages (LeViT's Linear after its BatchNorm, unless ``blocks=k``
    leaves its classifier analog); none when they are identities (no labels), as the output is then
    a sum of producers."""
    outputs = [
        f"{path}.linear" if hasattr(child, "linear") else path
        for path, child in model.named_children()
        if ("classifier" in path or "head" in path) and not isinstance(child, nn.Identity)
    ]
    return link_all(model, *outputs) if outputs else []


def register_classifiers(logits: dict[type, type]) -> None:
    """Add transformers classifiers and their logits subclasses to :data:`LOGITS` and register
    both: the classifier becomes its logits form, whose patch projection, its first weight layer,
    reads the image."""
    LOGITS.update(logits)
    for original, cls in logits.items():
        register(original, Role.INPUT, twin=_as_logits)
        register(cls, Role.INPUT, twin=_as_logits, links=_network_links, blocks=cls.block_paths)


register_classifiers(
    {
        vit.ViTForImageClassification: ViTLogits,
        deit.DeiTForImageClassification: DeiTLogits,
        deit.DeiTForImageClassificationWithTeacher: DeiTWithTeacherLogits,
        dinov2.Dinov2ForImageClassification: Dinov2Logits,
        dinov2_registers.Dinov2WithRegistersForImageClassification: Dinov2WithRegistersLogits,
        vit_msn.ViTMSNForImageClassification: ViTMSNLogits,
        ijepa.IJepaForImageClassification: IJepaLogits,
        clip.CLIPForImageClassification: CLIPLogits,
        metaclip_2.MetaClip2ForImageClassification: MetaClip2Logits,
        siglip.SiglipForImageClassification: SiglipLogits,
        swin.SwinForImageClassification: SwinLogits,
        siglip2.Siglip2ForImageClassification: Siglip2Logits,
        donut.DonutSwinForImageClassification: DonutSwinLogits,
    }
)
#: transformers' module classes by the end of their names: containers, and LayerScale and
#: DropPath, linear in evaluation
CONTAINERS = ("Encoder", "Embeddings", "Layer", "Stage", "PatchMerging", "MLP", "Attention", "Pooler")
CONTAINERS += ("SelfOutput", "Intermediate", "Output")  # the earlier layout's attention and MLP parts
CONTAINERS += ("Reduction", "FeedForwardNetwork", "DepthWiseConv", "FFN")  # PVT's and SegFormer's
CONTAINERS += ("Subsample", "LayerWithBN")  # LeViT's strided selection, its Linear and BatchNorm
PASSTHROUGHS = ("LayerScale", "DropPath")


def register_family(family: ModuleType, twins: dict[str, type]) -> None:
    """Register the module classes a transformers model file defines, by the end of their names:
    those ending in a key of ``twins`` get its twin, the model (the backbone) a refusal when met
    outside its classifier, :data:`CONTAINERS` and :data:`PASSTHROUGHS` their roles."""
    for name, cls in vars(family).items():
        if not isinstance(cls, type) or cls.__module__ != family.__name__ or not issubclass(cls, nn.Module):
            continue  # imported names, functions
        twin = next((twin for suffix, twin in twins.items() if name.endswith(suffix)), None)
        if twin is not None:
            register(cls, Role.CONTAINER, twin=twin)
        elif name.endswith("Model") and not name.endswith("PreTrainedModel"):
            register(cls, Role.CONTAINER, check=_headless)
        elif name.endswith(CONTAINERS):
            register(cls, Role.CONTAINER)
        elif name.endswith(PASSTHROUGHS):
            register(cls, Role.PASSTHROUGH)


for family in (vit, deit, dinov2, dinov2_registers, vit_msn, ijepa, clip, metaclip_2, siglip, siglip2):
    register_family(family, {"Attention": ExplicitHFAttention, "SwiGLUFFN": ExplicitSwiGLUFFN})
register_family(swin, {"Attention": ExplicitSwinAttention})
register_family(donut, {"SelfAttention": ExplicitDonutSwinAttention})
# never run by the classifier (the vision model computes it for its pooled output): kept as it is
for head in (siglip.SiglipMultiheadAttentionPoolingHead, siglip2.Siglip2MultiheadAttentionPoolingHead):
    register(head, Role.CONSTANT)
register(swin.SwinRelativePositionBias, Role.CONSTANT)  # reads its table only
for twin in (ExplicitHFAttention, ExplicitSwinAttention, ExplicitDonutSwinAttention, ExplicitSwiGLUFFN):
    register(twin, Role.CONTAINER)
for name in (
    "GELUActivation",
    "GELUTanh",
    "NewGELUActivation",
    "FastGELUActivation",
    "QuickGELUActivation",
    "ClippedGELUActivation",
    "AccurateGELUActivation",
    "SiLUActivation",
    "MishActivation",
    "LaplaceActivation",
    "ReLUSquaredActivation",
    "SqrtSoftplusActivation",
):
    register(getattr(activations, name), Role.NONLINEAR)  # elementwise functions: EC(F)
register(activations.LinearActivation, Role.PASSTHROUGH)

# families whose twins build on this module's: importing them adds their classifiers to LOGITS, so
# that whoever imports this module has every rule for transformers
from . import (  # noqa: E402, F401
    hf_beit,
    hf_cvt,
    hf_focalnet,
    hf_hiera,
    hf_levit,
    hf_mobilevit,
    hf_poolformer,
    hf_pvt,
    hf_swiftformer,
    hf_swinv2,
)
