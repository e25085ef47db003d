"""An evaluation's running totals on disk, so that an interrupted run continues where it stopped.

``transpike eval`` keeps them in ``OUT/progress/``: for each evaluation (each ``--blocks`` K is
one) and each process, a safetensors file with the correct counts so far, the spike monitor's
records (:meth:`~transpike.spikes.SpikeMonitor.state`), the top-1 classes of the samples done
(where the evaluation keeps them) and how many of the process's samples are done, under a key
that a resumed run must match: the network's digest, the data, the number of samples, T, the
number of processes, whether spikes are counted, the early-exit rules, whether predictions
are kept and the version of the file's layout (``VERSION``: totals of another layout are refused,
not misread). The file is replaced atomically at the end of the first batch ``every`` seconds
after the last save, and when the run stops on an exception (Ctrl-C, SIGTERM under ``transpike
eval``, running out of memory) with the totals of the last whole batch, so a killed run repeats
at most ``every`` seconds and a batch. A save that fails warns and the evaluation goes on: the
totals matter only if it is interrupted. Resumed, the totals are those of an uninterrupted run:
they are sums of integers, exact in float64, and the batch size may change.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from .io import atomic_write

FOLDER = "progress"
# of the tensors' layout and key (2: early-exit counts; 3: each sample's predictions; 4: early-exit
# rules of several kinds; 5: the calibration samples met; 6: the samples where the SNN's top-1 is the
# ANN's; 7: the top-1 of the ANN with rounded synapses): others are refused
VERSION = 7
INTERVAL = 60.0  # seconds between saves: what a killed run may have to repeat


class Progress:
    """Where one evaluation keeps its totals, and whether to continue from them.

    Args:
        folder: the progress folder (``OUT/progress``).
        name: the evaluation's name within its command (``eval``, ``blocks-3``).
        context: key entries the evaluation cannot know itself (the data spec).
        resume: continue from a saved file; otherwise start from the first sample.
        every: least seconds between two periodic saves.
    """

    def __init__(self, folder: Path, name: str, context: dict, resume: bool, every: float = INTERVAL) -> None:
        self.folder, self.name, self.context = Path(folder), name, dict(context)
        self.resume, self.every = resume, every
        self._saved_at = time.monotonic()

    def path(self, rank: int) -> Path:
        return self.folder / f"{self.name}.rank{rank}.safetensors"

    def restore(self, key: dict, rank: int) -> dict[str, Tensor] | None:
        """The saved totals of this evaluation in process ``rank``; None when there are none to
        continue from (not resuming, or this evaluation had not started).

        Raises:
            ValueError: the saved file is not a progress file, or another evaluation's (the key
                entries that differ are named).
        """
        path = self.path(rank)
        if not (self.resume and path.exists()):
            return None
        try:
            with safe_open(path, framework="pt") as handle:
                saved = json.loads((handle.metadata() or {})["key"])
            tensors = load_file(path)
        except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as error:
            raise ValueError(f"--resume: {path}: not a transpike progress file ({error})") from None
        key = {"format": VERSION, **self.context, **key}
        differ = [f"{name} {saved.get(name)!r} there, {value!r} here" for name, value in key.items()
                  if saved.get(name) != value]  # fmt: skip
        if differ:
            raise ValueError(
                f"--resume: {path} belongs to another evaluation ({'; '.join(differ)}; the network is a "
                "digest of its weights, thresholds and options, so the calibration counts): "
                "give the interrupted run's arguments"
            )
        return tensors

    def save(self, key: dict, rank: int, tensors: dict[str, Tensor], now: bool = False) -> None:
        """Write ``tensors`` under ``key`` if ``every`` seconds passed since the last save, or ``now``.

        A save that fails (a full disk, a folder that became read-only) warns and leaves the last
        saved totals in place: they are what the run is for only if it is interrupted, so the
        evaluation goes on rather than losing what it has computed; the next save is tried ``every``
        seconds later."""
        if not now and time.monotonic() - self._saved_at < self.every:
            return
        self._saved_at = time.monotonic()
        tensors = {name: value.detach().cpu().contiguous() for name, value in tensors.items()}
        metadata = {"key": json.dumps({"format": VERSION, **self.context, **key})}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path(rank), lambda tmp: save_file(tensors, tmp, metadata=metadata))
        except OSError as error:
            warnings.warn(
                f"could not save the evaluation's totals to {self.path(rank)} ({error}); the evaluation "
                "goes on, and --resume would continue from the totals saved last",
                RuntimeWarning,
                stacklevel=2,
            )
