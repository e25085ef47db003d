"""Saving and loading converted networks: safetensors plus a JSON header, never pickle.

A file holds every tensor of the converted network (weights, thresholds) in safetensors format and,
in the safetensors metadata, a JSON document with the format name and version, the conversion
options, how to rebuild the ANN architecture and where the network came from (its provenance);
the calibration samples' fingerprints are one more tensor, ``@calibration_fingerprints``.
Loading rebuilds the architecture (from timm or torchvision, or from a template model you pass),
converts its structure with the saved thresholds and loads the tensors, so the loaded network gives
bit-identical outputs. No code is executed from the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ._version import __version__
from .convert import ConversionOptions, copied, prepare, to_spiking
from .model import SpikingModel
from .models import build_model

FORMAT = "transpike.spiking-network"
VERSION = 1
# no state_dict key starts with "@": modules and tensors set as attributes have identifiers for names
FINGERPRINTS = "@calibration_fingerprints"


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one step.

    A crash mid-write leaves the previous file (if any) intact and no half-written file behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the permissions a plain open() would give
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (of a checkpoint, to tell which one a network came from)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def save(snn: SpikingModel, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``snn`` to ``path`` (safetensors with a JSON header).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    header = dict(format=FORMAT, version=VERSION, transpike=__version__, options=snn.options,
                  model=snn.model_spec, provenance=snn.provenance)  # fmt: skip
    tensors = {key: value.detach().cpu().contiguous() for key, value in snn.network.state_dict().items()}
    if snn.calibration_fingerprints is not None:
        tensors[FINGERPRINTS] = snn.calibration_fingerprints.cpu().contiguous()
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"transpike": json.dumps(header)}))
    return path


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a transpike file; a clear ValueError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path}: not a transpike network file (not safetensors: {error})") from None
    try:
        header = json.loads(metadata["transpike"])
    except (KeyError, json.JSONDecodeError):
        raise ValueError(f"{path}: a safetensors file, but not one written by transpike.save") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path}: not a transpike network file (format {header.get('format')!r})")
    version = header.get("version")
    if version != VERSION:
        raise ValueError(
            f"{path}: file format version {version!r} (written by transpike {header.get('transpike')}); "
            f"this transpike {__version__} reads version {VERSION}"
        )
    return header


def rebuild_ann(snn: SpikingModel, model: nn.Module | None = None) -> nn.Module:
    """The ANN a network was converted from: its architecture with the network's own weights."""
    ann = copied(model) if model is not None else build_model(snn.model_spec, "network")
    ann.load_state_dict(snn.ann_state_dict())
    return ann.eval()


def load(path: str | os.PathLike, model: nn.Module | None = None) -> SpikingModel:
    """Read a network written by :func:`save`.

    Args:
        path: the file.
        model: an ANN with the same architecture as the one converted (its weights are not used);
            needed only when the file does not name a timm or torchvision model.

    Raises:
        ValueError: the file is missing, not a transpike file, from an incompatible version, or does
            not match the architecture.
    """
    path = Path(path)
    header = read_header(path)
    try:
        options = ConversionOptions(**header["options"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: bad conversion options in the header: {error}") from None
    tensors = load_file(path)
    fingerprints = tensors.pop(FINGERPRINTS, None)  # none in files written before they were kept
    if fingerprints is not None and (fingerprints.dtype != torch.int64 or fingerprints.dim() != 1):
        raise ValueError(f"{path}: bad calibration fingerprints: {fingerprints.dtype} of shape "
                         f"{tuple(fingerprints.shape)}, expected int64 [N]")  # fmt: skip
    network = prepare(model if model is not None else build_model(header.get("model"), str(path)), options)

    def saved_thresholds(observer, neuron_path):
        try:
            return tensors[f"{neuron_path}.theta_pos"], tensors[f"{neuron_path}.theta_neg"]
        except KeyError:
            raise ValueError(f"{path}: no thresholds for MT site {neuron_path}; wrong model?") from None

    network = to_spiking(network, options, saved_thresholds)
    try:
        missing, unexpected = network.load_state_dict(tensors, strict=False)
    except RuntimeError as error:
        raise ValueError(f"{path}: does not match the model: {error}") from None
    if missing or unexpected:
        raise ValueError(
            f"{path}: does not match the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    provenance = header.get("provenance", {})  # none in files written before it was kept
    if not isinstance(provenance, dict):
        raise ValueError(f"{path}: bad provenance in the header: {provenance!r}")
    return SpikingModel(network, options.to_dict(), header.get("model"), provenance, fingerprints)
