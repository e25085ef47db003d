"""The built-in default data and model: sklearn's digits and a small ViT trained on them.

Nothing is downloaded: sklearn ships the 1 797 8x8 digit images. The split is fixed (60 % train,
40 % test, stratified, seed 0) and pixels are scaled to [0, 1] and standardized with the training
split's mean and standard deviation. The model is a timm VisionTransformer (8 px input, 2 px
patches, 16 tokens, 4 blocks of width 64, average pooling); it is trained with a fixed seed and
cached, so later runs load it in a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

TEST_FRACTION = 0.4
SPLIT_SEED = 0
ARCHITECTURE = dict(
    img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4,
    mlp_ratio=2.0, global_pool="avg", class_token=False,
)  # fmt: skip
TRAINING = dict(seed=0, epochs=40, batch_size=32, lr=3e-3, weight_decay=0.01)


def load_digits_split(split: str) -> tuple[Tensor, Tensor]:
    """Images [N, 1, 8, 8] (standardized float32) and labels [N] of the "train" or "test" split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"digits split must be 'train' or 'test', got {split!r}")
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train, test = train_test_split(
        range(len(labels)), test_size=TEST_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
    )
    mean, std = images[train].mean(), images[train].std()
    index = torch.tensor(train if split == "train" else test)
    return (images[index] - mean) / std, labels[index]


def digits_vit() -> nn.Module:
    """The untrained default model (random init)."""
    return timm.create_model("vit_tiny_patch16_224", **ARCHITECTURE)


def cache_dir() -> Path:
    """Where trained models are kept: $TRANSPIKE_CACHE or ~/.cache/transpike."""
    return Path(os.environ.get("TRANSPIKE_CACHE", Path.home() / ".cache" / "transpike"))


def _key() -> str:
    spec = json.dumps([ARCHITECTURE, TRAINING, TEST_FRACTION, SPLIT_SEED, torch.__version__], sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def train_digits_vit(progress: Callable[[int, int], None] | None = None) -> nn.Module:
    """Train the default model from scratch (seeded; about a minute on 2 CPU cores)."""
    torch.manual_seed(TRAINING["seed"])
    return train_on_digits(digits_vit(), progress=progress)


def train_on_digits(
    model: nn.Module,
    transform: Callable[[Tensor], Tensor] = lambda x: x,
    progress: Callable[[int, int], None] | None = None,
) -> nn.Module:
    """Train ``model`` on the digits' training split, its images through ``transform`` (a resize
    for models that need more than 8 px), with the default model's recipe: AdamW, a one-cycle
    schedule, the TRAINING settings, a seeded order. Returns it in eval mode."""
    x, y = load_digits_split("train")
    x = transform(x)
    batch = TRAINING["batch_size"]
    steps = TRAINING["epochs"] * -(-len(y) // batch)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=TRAINING["lr"], weight_decay=TRAINING["weight_decay"]
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, TRAINING["lr"], total_steps=steps, pct_start=0.1
    )
    order = torch.Generator().manual_seed(TRAINING["seed"])
    model.train()
    for epoch in range(TRAINING["epochs"]):
        for index in torch.randperm(len(y), generator=order).split(batch):
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        if progress is not None:
            progress(epoch + 1, TRAINING["epochs"])
    return model.eval()


def trained_digits_vit(progress: Callable[[int, int], None] | None = None) -> nn.Module:
    """The default model, trained once and then loaded from the cache."""
    path = cache_dir() / f"digits-vit-{_key()}.safetensors"
    model = digits_vit().eval()
    if path.exists():
        model.load_state_dict(load_file(path))
        return model
    trained = train_digits_vit(progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, partial)
    partial.replace(path)  # atomic: a crash never leaves a half-written cache entry
    return trained
