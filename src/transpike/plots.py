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


def plot_energy(energy: dict, path: Path) -> Path:
    """SNN/ANN energy after t steps: ECMT's form, the full form and SIT's formula."""
    steps = range(1, len(energy["energy_ratio"]) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(steps, energy["energy_ratio"], marker="o", label="ECMT form (synaptic ACs)")
    ax.plot(steps, energy["energy_ratio_full"], marker="s", label="full (+ analog float work)")
    ax.plot(steps, energy["energy_ratio_sit"], marker="^", label="SIT formula")
    ax.axhline(1.0, color="gray", linestyle="--", label="ANN")
    ax.set_xlabel("time steps t")
    ax.set_ylabel("energy SNN / ANN")
    ax.set_xticks(list(steps))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def plot_firing_rates(energy: dict, path: Path) -> Path:
    """Mean spikes per neuron per step at every MT site, over all T steps."""
    sites = energy["sites"]
    rates = [site["cumulative_firing_rate"][-1] for site in sites]
    fig, ax = plt.subplots(figsize=(6, max(3.0, 0.16 * len(sites))), dpi=120)
    ax.barh(range(len(sites)), rates)
    ax.set_yticks(range(len(sites)), [site["path"].removesuffix(".neuron") for site in sites], fontsize=5)
    ax.invert_yaxis()
    ax.set_xlabel("spikes per neuron per step")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def plot_spike_levels(energy: dict, path: Path) -> Path:
    """Spikes per threshold level and sign, all MT sites and steps (most land on θ1 and -θ2)."""
    histogram = energy["level_histogram"]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    if histogram:
        levels = range(len(histogram[0]))
        ax.bar([k - 0.2 for k in levels], histogram[0], width=0.4, label="positive: θ1·2^k")
        ax.bar([k + 0.2 for k in levels], histogram[1], width=0.4, label="negative: -θ2·2^k")
        ax.set_xticks(list(levels))
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("level k")
    ax.set_ylabel("spikes per sample (all steps)")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
