"""Figures from results: SNN accuracy against time steps, with the ANN as a reference line."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt


def plot_accuracy(results: dict, path: Path) -> Path:
    """SNN top-1 after t steps for t = 1..T, and the ANN's top-1 as a horizontal line."""
    steps = range(1, len(results["snn_top1"]) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(steps, results["snn_top1"], marker="o", label="SNN")
    ax.axhline(results["ann_top1"], color="gray", linestyle="--", label=f"ANN ({results['ann_top1']:.2f} %)")
    ax.set_xlabel("time steps t")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{results.get('model', '')} ({results.get('method', '')})", fontsize=9)
    ax.set_xticks(list(steps))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
