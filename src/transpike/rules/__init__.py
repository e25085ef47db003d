"""What the converter does with each module type: the rule registry.

Every module in a model must have a rule, found by its exact type, or conversion stops with a
:class:`~transpike.errors.ConversionError` naming the module (``strict=False`` leaves it analog
instead). Roles:

- ``CONTAINER``: its forward only combines its children linearly (sums, reshapes, concatenation,
  token selection); the converter recurses into it. Its rule may name ``links``: which child's
  output goes only to which children, so that once converted they pass rates instead of
  increments (:mod:`transpike.rates`).
- ``INPUT``: like a container, but it reads the model input, and its first weight layer (in module
  order, the order timm's embeddings run them; or the layers its rule's ``inputs`` names) sees that
  input at every step (direct coding) and gets no MT neuron: the ViT patch embedding's projection,
  the first convolution of a hybrid ViT's CNN stem, whose later layers are converted like any
  others.
- ``PASSTHROUGH``: linear and stateless in eval mode (Identity, Dropout, LayerScale); kept as is.
- ``CONSTANT``: its output does not depend on the model input (EdgeNeXt's Fourier position
  encoding, a function of the grid's size; Swin V2's position-bias MLP): kept as is, whatever it
  holds, the same at every step, which is its own rate. Its work is counted neither for the ANN
  nor for the SNN (computed once for an input size).
- ``WEIGHT``: a weight layer (Linear, Conv); an MT neuron is placed before it.
- ``NONLINEAR``: becomes EC(F). A subclass of a registered nonlinear type is accepted too, since EC
  only calls the module's own forward.
- ``PRODUCT``: a product of two activations; MT neurons on both operands and the product EC.

A rule may also give a ``twin``: a module that replaces the original at prepare time because the
original hides its internals (timm's Attention calls one fused SDPA kernel), a ``check`` that
returns why a particular configuration cannot be converted, and, for a weight layer that computes
its weight in forward (weight standardization), ``plain``: the plain layer it amounts to, whose
weight parallel parameter normalization copies. Register your own types with :func:`register`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import nn


class Role(str, enum.Enum):
    CONTAINER = "container"
    INPUT = "input"
    PASSTHROUGH = "passthrough"
    CONSTANT = "constant"
    WEIGHT = "weight"
    NONLINEAR = "nonlinear"
    PRODUCT = "product"


#: (producer, readers): paths inside a container, such that the producer's output reaches exactly
#: those readers, through operations that are linear and the same at every step. The producer may
#: be a tuple of paths whose outputs are summed (a residual stream): then all of them or none link.
Link = tuple[str | tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True)
class Rule:
    role: Role
    channel_dims: tuple[int, ...] = ()
    twin: Callable[[nn.Module], nn.Module] | None = None
    check: Callable[[nn.Module], str | None] | None = None
    links: Callable[[nn.Module], Iterable[Link]] | None = None
    plain: Callable[[nn.Module], nn.Module] | None = None
    blocks: Callable[[nn.Module], list[str]] | None = None
    inputs: Callable[[nn.Module], list[str]] | None = None


_RULES: dict[type, Rule] = {}


def register(
    cls: type,
    role: Role | str,
    *,
    channel_dims: tuple[int, ...] = (),
    twin: Callable[[nn.Module], nn.Module] | None = None,
    check: Callable[[nn.Module], str | None] | None = None,
    links: Callable[[nn.Module], Iterable[Link]] | None = None,
    plain: Callable[[nn.Module], nn.Module] | None = None,
    blocks: Callable[[nn.Module], list[str]] | None = None,
    inputs: Callable[[nn.Module], list[str]] | None = None,
) -> None:
    """Tell the converter how to treat modules of type ``cls`` (exact type).

    Args:
        cls: the module class.
        role: one of :class:`Role` (or its value).
        channel_dims: for ``WEIGHT``, the input's channel dimensions as negative indices
            (``(-1,)`` for Linear, ``(-3,)`` for Conv2d), used by per-channel thresholds.
        twin: for modules that hide their internals, a function returning an explicit equivalent
            (of another type), or the module itself where this instance hides nothing.
        check: returns a reason why a given instance cannot be converted, or None.
        links: for ``CONTAINER``, the (producer, readers) links of a given instance, by the paths
            of its children, which conversion keeps (see :mod:`transpike.rates`).
        plain: for ``WEIGHT`` layers whose forward transforms their weight, a function returning
            the equivalent plain layer (:class:`transpike.synapses.ParallelLayer` copies its weight).
        blocks: for a model, the paths of its Transformer blocks in forward order, which
            ``blocks=k`` counts, where they are not a ``blocks`` sequence or stages of them
            (:func:`transpike.convert.block_paths`).
        inputs: for ``INPUT``, the paths (inside the module) of the weight layers that read its
            input, where there are several (a re-parameterizable block's parallel branches); by
            default its first weight layer.
    """
    _RULES[cls] = Rule(Role(role), tuple(channel_dims), twin, check, links, plain, blocks, inputs)


def rule_for(module: nn.Module) -> Rule | None:
    """The rule for ``module``: its exact type's, or a registered nonlinear base class's.

    The rules for Hugging Face transformers' models (:mod:`.hf_vit`, which loads the other ``hf_``
    modules) are registered the first time a module of transformers is met: importing transformers
    costs seconds that a timm user would pay for nothing.
    """
    if type(module).__module__.startswith("transformers.") and type(module) not in _RULES:
        from . import hf_vit  # noqa: F401  (registers its rules)
    rule = _RULES.get(type(module))
    if rule is not None:
        return rule
    for base in type(module).__mro__[1:]:
        rule = _RULES.get(base)
        if rule is not None and rule.role is Role.NONLINEAR:
            return rule
    return None


# registers the built-in rules
from . import (  # noqa: E402, F401
    squeeze_excite,
    timm_beit,
    timm_byoanet,
    timm_cait,
    timm_cnn,
    timm_coat,
    timm_convit,
    timm_cpubone,
    timm_crossvit,
    timm_csatv2,
    timm_davit,
    timm_edgenext,
    timm_efficientformer,
    timm_efficientformer_v2,
    timm_efficientvim,
    timm_efficientvit_mit,
    timm_efficientvit_msra,
    timm_fastvit,
    timm_focalnet,
    timm_gcvit,
    timm_gemma4_vit,
    timm_hiera,
    timm_hieradet,
    timm_iformer,
    timm_levit,
    timm_lowformer,
    timm_mambaout,
    timm_maxxvit,
    timm_metaformer,
    timm_mlp_mixer,
    timm_mobilenetv4,
    timm_mobilenetv5,
    timm_mobilevit,
    timm_mvitv2,
    timm_naflexvit,
    timm_nest,
    timm_nextvit,
    timm_pcpvt_svt,
    timm_pit,
    timm_pvt,
    timm_samvit,
    timm_shvit,
    timm_swiftformer,
    timm_swin,
    timm_swinv2,
    timm_swinv2_cr,
    timm_tinyvit,
    timm_tnt,
    timm_visformer,
    timm_vit,
    timm_vit_relpos,
    timm_vitamin,
    timm_vlm_vit,
    timm_volo,
    timm_xcit,
    torch_nn,
    torch_transformer,
    torchvision_maxvit,
    torchvision_swin,
    torchvision_vit,
)
