"""Which evaluated samples were calibration samples.

Thresholds fitted on the images an SNN is then scored on may flatter its accuracy (the calibration
histograms have seen exactly those activations; on the digits ViT by at most a point, within
chance, BENCHMARKS.md §2), and a figure's reader cannot tell without knowing. ``convert`` keeps
a 64-bit fingerprint of every calibration sample (``SpikingModel.calibration_fingerprints``, saved
with the network) and ``evaluate`` counts the evaluated samples whose fingerprint is among them. A
fingerprint is the BLAKE2b hash of the sample's values as float32 bytes: the same preprocessed
image gives the same one whatever the batch or the dtype it came in, any other change to its values
(another crop, an augmentation) another one. Two different samples share one with probability
2^-64 per pair.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor
from torch.utils.data import Dataset


def fingerprints(x: Tensor) -> Tensor:
    """The fingerprints of the samples of batch ``x`` [B, ...]: int64 [B] on the CPU."""
    rows = x.detach().to("cpu", torch.float32).reshape(len(x), math.prod(x.shape[1:])).contiguous().numpy()
    # one hash per sample: hashlib has no batched form, and hashing is cheap beside a simulation
    hashes = [hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in rows]
    return torch.tensor([int.from_bytes(h, "little", signed=True) for h in hashes], dtype=torch.int64)


def set_digest(prints: Tensor) -> str:
    """The calibration set's name: the first 16 hex digits of the SHA-256 of its fingerprints in
    sorted order, so the same samples give the same name in any order or batching."""
    return hashlib.sha256(prints.sort().values.numpy().tobytes()).hexdigest()[:16]


class WithFingerprints(Dataset):
    """``dataset``'s samples as (x, y, fingerprint of x): hashed where the sample is loaded, so a
    DataLoader's worker processes hash beside decoding, not the evaluating process after them (a
    224 px image takes about 0.7 ms, a seventh of what an H100 spends simulating one with
    vit_small at T = 8: BENCHMARKS.md §2 and §3b)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, object, Tensor]:
        x, y = self.dataset[index]
        return x, y, fingerprints(x[None])[0]
