"""Building the ANN to convert: a timm, torchvision or Hugging Face transformers model by name,
with keyword arguments and a checkpoint.

Models are always created with random weights (``pretrained=False``, ``weights=None``: nothing is
downloaded); real weights come from a checkpoint file the user gives, read without unpickling, or
for torchvision weights named by the user, from torch.hub's cache where an earlier download left them,
or from the safetensors weights in a transformers or timm model's directory. A name ``torchvision:NAME``
means ``torchvision.models.get_model(NAME)``; ``hf:CLASS`` a transformers image classifier
(``hf:ViTForImageClassification``, its configuration from the keyword arguments) and ``hf:DIR``
the one saved in a directory (``config.json``, and ``model.safetensors`` if there are weights);
``local-dir:DIR`` the timm model saved in a directory (timm's scheme: ``config.json``, and
``model.safetensors`` if there are weights, as the Hub's timm repositories hold them); any other is
timm's.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

TORCHVISION = "torchvision:"
HF = "hf:"
#: timm's schemes for a model saved in a directory, and on the Hugging Face Hub
LOCAL_DIR, HUB = "local-dir:", "hf-hub:"
#: transformers' class that holds a timm model (``timm_model``), as a saved configuration names it
TIMM_WRAPPER = "TimmWrapperForImageClassification"


def _hf_builder(target: str):
    """The function that builds the transformers model ``target`` (a class name or a directory),
    in the form whose forward returns logits (:func:`transpike.rules.hf_vit.logits_model`)."""
    try:
        from transformers import AutoConfig

        from .rules.hf_vit import LOGITS, logits_model
    except ImportError as error:  # not installed, or older than the layout the rules know
        raise ValueError(f"model {HF}{target}: {error} (pip install 'transpike[hf]')") from None
    classes = {cls.__name__: cls for cls in LOGITS}
    directory = Path(target)
    if directory.is_dir():
        if not (directory / "config.json").is_file():
            raise ValueError(f"model {HF}{target}: the directory holds no config.json")

        def build(**kwargs):
            config = AutoConfig.from_pretrained(directory, local_files_only=True, **kwargs)
            cls = _hf_class(classes, (config.architectures or ["(none)"])[0], f"{directory}/config.json")
            if not _holds_safetensors(directory, f"{HF}{target}", "model.save_pretrained(DIR)"):
                return logits_model(cls(config))  # a configuration alone: random weights
            model = cls.from_pretrained(directory, config=config, local_files_only=True, use_safetensors=True)
            return logits_model(model)

        return build
    cls = _hf_class(classes, target, "")
    return lambda **kwargs: logits_model(cls(cls.config_class(**kwargs)))


def _holds_safetensors(directory: Path, name: str, how: str) -> bool:
    """Whether the model directory holds safetensors weights; a clear error where it holds only
    pickled ones, which transpike never reads (``how``: how to save them as safetensors)."""
    if any(directory.glob("*.safetensors")):
        return True
    pickled = sorted(path.name for path in directory.iterdir() if path.suffix in (".bin", ".pt", ".pth"))
    if pickled:
        raise ValueError(
            f"model {name}: holds only pickled weights ({', '.join(pickled)}), which transpike never "
            f"reads; save them as safetensors ({how})"
        )
    return False


def _timm_dir_builder(name: str):
    """The function that builds the timm model saved in the directory of ``local-dir:DIR`` (timm's
    own scheme: ``config.json`` with the architecture, its arguments and its preprocessing, as
    ``timm.models.push_to_hf_hub`` and the Hub's timm repositories have it; or as transformers'
    ``TimmWrapperForImageClassification`` saves one, its arguments under ``model_args``), with the
    weights of its ``model.safetensors`` where there are some."""
    directory = Path(name.removeprefix(LOCAL_DIR))
    config = directory / "config.json"
    if not config.is_file():
        raise ValueError(f"model {name}: {directory} holds no config.json")
    saved = json.loads(config.read_text())
    architecture = saved.get("architecture")
    if not isinstance(architecture, str) or not timm.is_model(architecture):
        hint = "; a transformers model's directory is read by hf:DIR" if architecture is None else ""
        raise ValueError(f"model {name}: {config} names no timm architecture ({architecture!r}){hint}")

    # saved by transformers: its configuration holds keys that timm's own loader refuses
    wrapped = TIMM_WRAPPER in (saved.get("architectures") or [])

    def build(**kwargs):
        if wrapped:
            kwargs = {"num_classes": saved["num_classes"], **(saved.get("model_args") or {}), **kwargs}
            overlay = saved.get("pretrained_cfg") or {}
            model = timm.create_model(
                architecture, pretrained=False, pretrained_cfg_overlay=overlay, **kwargs
            )
        else:
            model = timm.create_model(name, pretrained=False, **kwargs)
        if _holds_safetensors(directory, name, "timm.models.save_for_hf(model, DIR)"):
            load_checkpoint(model, directory / "model.safetensors")
        return model

    return build


def _hf_class(classes: dict[str, type], name: str, where: str) -> type:
    if name == TIMM_WRAPPER and where:
        raise ValueError(
            f"{where}: a timm model saved by transformers; read its directory with {LOCAL_DIR}DIR"
        )
    if name not in classes:
        source = f" (architectures in {where})" if where else " (nor a directory)"
        raise ValueError(f"transformers model {name!r}{source}: supported: {', '.join(sorted(classes))}")
    return classes[name]


def _builder(name: str):
    """The function that builds the model ``name``, or a clear error naming similar models."""
    if name.startswith(HF):
        return _hf_builder(name.removeprefix(HF))
    if name.startswith(TORCHVISION):
        known, short = torchvision.models.list_models(), name.removeprefix(TORCHVISION)
        if short in known:
            return lambda **kwargs: torchvision.models.get_model(short, weights=None, **kwargs)
        close = [TORCHVISION + m for m in known if m.startswith(short.split("_")[0])][:5]
        what = "torchvision model"
    else:
        if name.startswith(LOCAL_DIR):
            return _timm_dir_builder(name)
        if name.startswith(HUB):
            raise ValueError(
                f"model {name!r}: transpike never downloads; fetch the repository once where there is "
                f"network (huggingface-cli download {name.removeprefix(HUB)} --local-dir DIR) and pass "
                f"{LOCAL_DIR}DIR"
            )
        if timm.is_model(name):
            return lambda **kwargs: timm.create_model(name, pretrained=False, **kwargs)
        close, what = timm.list_models(f"*{name.split('_')[0]}*")[:5], "timm model"
    hint = f"; similar: {', '.join(close)}" if close else ""
    raise ValueError(f"unknown {what} {name!r}{hint}")


def create_model(name: str, kwargs: dict | None = None, seed: int = 0) -> nn.Module:
    """``timm.create_model(name, pretrained=False, **kwargs)``, or for ``torchvision:NAME``
    ``torchvision.models.get_model(NAME, weights=None, **kwargs)``, or for ``hf:CLASS`` and
    ``hf:DIR`` a transformers image classifier (module docstring), in eval mode, with clear errors.

    The random initial weights come from ``seed`` (without touching the global RNG), so a model
    without a checkpoint is the same in every run and every process.
    """
    build = _builder(name)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build(**(kwargs or {})).eval()
    except (TypeError, ValueError, AssertionError, OSError) as error:  # OSError: a transformers directory
        raise ValueError(f"model {name!r} with kwargs {kwargs}: {error}") from None


def torchvision_weights(name: str, weights: str) -> torchvision.models.WeightsEnum:
    """The torchvision weights ``weights`` of the model ``name`` (``torchvision:NAME``), given as
    ``IMAGENET1K_V1``, ``DEFAULT`` or ``Swin_T_Weights.IMAGENET1K_V1``; a clear error otherwise."""
    if not name.startswith(TORCHVISION):
        raise ValueError(
            f"weights {weights!r}: only torchvision models take named weights, not the timm model {name!r} "
            "(a timm model's preprocessing follows the pretrained tag in its name, e.g. "
            "vit_base_patch16_224.augreg_in21k_ft_in1k)"
        )
    enum = torchvision.models.get_model_weights(name.removeprefix(TORCHVISION))
    try:
        return enum[weights.removeprefix(enum.__name__ + ".")]
    except KeyError:
        known = ", ".join(enum.__members__)
        raise ValueError(f"unknown weights {weights!r} for {name}; known: {known}") from None


def cached_weights(weights: torchvision.models.WeightsEnum) -> Path:
    """The file torch.hub keeps ``weights`` in once downloaded; it must be there: nothing is downloaded."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not path.is_file():
        raise ValueError(
            f"weights {weights}: not on disk at {path}, and transpike never downloads; pass "
            f'--checkpoint FILE, or fetch them once where there is network: python -c "import torchvision; '
            f"torchvision.models.get_weight('{weights}').get_state_dict()\""
        )
    return path


def model_spec(
    name: str,
    kwargs: dict | None = None,
    weights: torchvision.models.WeightsEnum | None = None,
    model: nn.Module | None = None,
) -> dict:
    """How a saved network says which architecture to rebuild: ``{"timm": name, "kwargs": ...}``
    or ``{"torchvision": NAME, "kwargs": ...}``, with ``"weights"`` naming the torchvision weights
    whose preprocessing preset its images get; for a transformers model (``model``, built from
    ``name``), ``{"hf": CLASS, "kwargs": its whole configuration}``."""
    if name.startswith(HF):
        from .rules.hf_vit import LOGITS

        original = next(cls for cls, logits in LOGITS.items() if isinstance(model, logits))
        return {"hf": original.__name__, "kwargs": model.config.to_dict()}
    if name.startswith(TORCHVISION):
        spec = {"torchvision": name.removeprefix(TORCHVISION), "kwargs": kwargs or {}}
        return {**spec, "weights": str(weights)} if weights is not None else spec
    return {"timm": name, "kwargs": kwargs or {}}


def spec_name(spec: dict) -> str:
    """The model name a spec stands for, as :func:`create_model` takes it."""
    for kind, prefix in (("torchvision", TORCHVISION), ("hf", HF)):
        if kind in spec:
            return prefix + spec[kind]
    return spec["timm"]


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, or a torch file read with ``weights_only=True``.

    The state dict may be the file's top level or sit under ``model`` or ``state_dict``;
    a ``module.`` prefix (DistributedDataParallel) and a ``timm_model.`` prefix (transformers'
    ``TimmWrapperForImageClassification``) are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # whatever fails to parse in an untrusted file, the user sees one error
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ValueError(f"checkpoint {path}: cannot be read safely (weights only): {reason}") from None
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path}: holds no state dict of tensors")
    # DistributedDataParallel's prefix, and transformers' TimmWrapper's
    return {key.removeprefix("module.").removeprefix("timm_model."): value for key, value in state.items()}


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a checkpoint into ``model`` (all keys must match)."""
    try:
        model.load_state_dict(read_checkpoint(path))
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path} does not fit the model: {str(error)[:500]}") from None
    return model


def build_model(spec: dict | None, where: str = "") -> nn.Module:
    """The ANN described by a model spec (:func:`model_spec`), with random weights."""
    if not spec or not ({"timm", "torchvision", "hf"} & set(spec)):
        raise ValueError(
            f"{where}: the network does not say how to build its model; pass the architecture: "
            "transpike.load(path, model=...)"
        )
    return create_model(spec_name(spec), spec.get("kwargs"))
