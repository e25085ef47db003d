"""Every sample's top-1 classes from one evaluation, on disk: what :mod:`transpike.compare` reads.

``transpike eval`` and ``transpike demo`` write ``predictions.safetensors`` next to
``results.json`` (in a ``--blocks`` sweep of several K, ``predictions.blocks-K.safetensors`` for
each K): int32 tensors ``labels`` [N] (the ANN's top-1 where the evaluation was scored against it,
``scored_against`` "ann" in the metadata), ``ann`` [N] (the ANN's top-1 class) and ``snn`` [N, T] (the
SNN's after t = 1..T) and ``index`` [N] (which sample of the evaluation data each row is; files
written before it was kept: row i is sample i), where the network knew its calibration samples
also ``calibration`` [N] (1 for a calibration sample), and in the safetensors metadata a
JSON document saying what was evaluated (model, data, conversion options). Reading never unpickles
and checks the layout, so a foreign or damaged file is refused with its name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from .io import atomic_write

FORMAT = "transpike-predictions"
VERSION = 1
FILE = "predictions.safetensors"


def file_name(evaluation: str | None) -> str:
    """The file of one evaluation among several of a command (``blocks-3``), or the only one's."""
    return FILE if evaluation is None else f"predictions.{evaluation}.safetensors"


@dataclass(frozen=True)
class Predictions:
    """One evaluation's top-1 classes per sample, and what was evaluated (``about``)."""

    path: Path
    labels: Tensor  # [N]
    ann: Tensor  # [N]
    snn: Tensor  # [N, T]
    about: dict
    calibration: Tensor | None = None  # [N], 1: a calibration sample of the network; None: not known
    index: Tensor | None = None  # [N], the evaluation data's sample of each row; None: row i is sample i

    @property
    def time_steps(self) -> int:
        return self.snn.shape[1]


def save_predictions(predictions: dict[str, Tensor], about: dict, path: Path) -> Path:
    """Write ``predictions`` (:func:`~transpike.evaluate.evaluate`'s) and ``about`` to ``path``."""
    names = [name for name in ("labels", "ann", "snn", "index", "calibration") if name in predictions]
    tensors = {name: predictions[name].to(torch.int32).contiguous() for name in names}
    metadata = {"format": FORMAT, "version": str(VERSION), "about": json.dumps(about)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def load_predictions(path: str | Path) -> Predictions:
    """The predictions in ``path``: a file written by :func:`save_predictions`, or a results
    directory holding ``predictions.safetensors``.

    Raises:
        ValueError: there is no such file, it is not a predictions file of a version this
            transpike reads, or its tensors do not fit together.
    """
    path = Path(path)
    if path.is_dir():
        sweep = sorted(p.name for p in path.glob("predictions.*.safetensors"))
        if not (path / FILE).is_file():
            found = f"; it holds {', '.join(sweep)}: name one" if sweep else ""
            raise ValueError(f"{path}: no {FILE} in this directory{found}")
        path = path / FILE
    if not path.is_file():
        raise ValueError(f"{path}: no such predictions file")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (no __iter__)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a transpike predictions file ({error})") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not a transpike predictions file (written by 'transpike eval')")
    if metadata.get("version") != str(VERSION):
        raise ValueError(f"{path}: predictions format version {metadata.get('version')}; this transpike "
                         f"reads version {VERSION}")  # fmt: skip
    labels, ann, snn, index, calibration = (
        tensors.get(k) for k in ("labels", "ann", "snn", "index", "calibration")
    )
    fits = (
        all(t is not None and t.dtype == torch.int32 for t in (labels, ann, snn))
        and labels.dim() == ann.dim() == 1
        and snn.dim() == 2
        and len(labels) == len(ann) == len(snn)
        and snn.shape[1] > 0
        and all(
            t is None or (t.dtype == torch.int32 and t.shape == labels.shape) for t in (index, calibration)
        )
    )
    if not fits:
        shapes = {name: tuple(t.shape) for name, t in tensors.items()}
        raise ValueError(f"{path}: damaged predictions file (tensors {shapes}; expected int32 labels [N], "
                         "ann [N], snn [N, T] and optionally index and calibration [N])")  # fmt: skip
    try:
        about = json.loads(metadata.get("about", "{}"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: damaged predictions file ({error})") from None
    if not isinstance(about, dict):
        raise ValueError(f"{path}: damaged predictions file (its description is not a JSON object)")
    return Predictions(path, labels, ann, snn, about, calibration, index)
