"""Figures from results: accuracy and energy against time steps, firing rates, spikes per level."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

from .energy import PARTS, EnergyReport


@contextmanager
def _figure(path: Path, size: tuple[float, float] = (5, 3.5)) -> Iterator[plt.Axes]:
    """One axes, saved as PNG to ``path`` (whatever its suffix) when the block ends."""
    fig, ax = plt.subplots(figsize=size, dpi=120)
    try:
        yield ax
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def _against(ax: plt.Axes, xs: list | None, xlabel: str, ylabel: str, legend: str = "best") -> None:
    """Labels, a grid and the legend; a tick at each of ``xs`` (None: matplotlib's own ticks)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xs is not None:
        ax.set_xticks(xs[:: -(-len(xs) // 16)])  # at most 16 labels: 29 levels or T = 64 would overlap
    ax.grid(alpha=0.3)
    ax.legend(loc=legend, fontsize=7)


def _prices(ax: plt.Axes, e_mac: float, e_ac: float, e_float: float) -> None:
    """The energy per operation an energy figure is priced at, as its title."""
    ax.set_title(f"{e_mac:g} pJ per MAC, {e_ac:g} per AC, {e_float:g} per float op", fontsize=8)


def plot_accuracy(results: dict, path: Path) -> Path:
    """SNN top-1 after t steps for t = 1..T, with the 95 % interval of its difference to the ANN's
    as error bars (a bar that crosses the ANN's line: a difference the data cannot tell from 0),
    the ANN's top-1 as a horizontal line, and the share of samples whose SNN top-1 is the ANN's."""
    steps = list(range(1, len(results["snn_top1"]) + 1))
    with _figure(path) as ax:
        ax.errorbar(steps, results["snn_top1"], yerr=results["difference_ci95"], marker="o", capsize=3,
                    label="SNN (bars: 95 % interval of SNN - ANN)")  # fmt: skip
        ax.plot(steps, results["agreement"], marker="s", linestyle=":", label="SNN: same top-1 as the ANN")
        ax.axhline(
            results["ann_top1"], color="gray", linestyle="--", label=f"ANN ({results['ann_top1']:.2f} %)"
        )
        scored = ", scored against the ANN's top-1" if results.get("scored_against") == "ann" else ""
        ax.set_title(f"{results.get('model', '')} ({results.get('method', '')}){scored}", fontsize=9)
        _against(ax, steps, "time steps t", "top-1 accuracy, agreement (%)", "lower right")
    return path


def plot_comparison(comparison: dict, path: Path) -> Path:
    """Each compared evaluation's top-1 minus the reference's after t steps, with the 95 % interval
    of the paired difference as error bars (:mod:`transpike.compare`); a bar that crosses 0 is a
    difference the data cannot tell from none."""
    with _figure(path) as ax:
        for entry in comparison["comparisons"]:
            rows = entry["rows"]
            label = ", ".join(f"{k}={b}" for k, (_, b) in entry["differs"].items()) or entry["path"]
            steps, differences = [r["t"] for r in rows], [r["difference"] for r in rows]
            ax.errorbar(steps, differences, yerr=[r["difference_ci95"] for r in rows], marker="o", capsize=3,
                        label=label[:90])  # fmt: skip
        ax.axhline(0.0, color="gray", linestyle="--", label="the reference")
        ax.set_yscale("symlog", linthresh=1.0)  # differences of tens of points at t = 1, tenths later
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.set_title(f"against {comparison['reference']['path']}", fontsize=8)
        steps = max((r["t"] for e in comparison["comparisons"] for r in e["rows"]), default=1)
        _against(ax, list(range(1, steps + 1)), "time steps t", "top-1 - reference's top-1 (points)")
    return path


# the early-exit rules' thresholds as the legend names them (the points carry their values)
EXIT_LABELS = {"confidence": "confidence c", "entropy": "entropy h", "margin": "margin m",
               "stable": "a top-1 stable for s steps"}  # fmt: skip


def _fixed_and_exits(ax: plt.Axes, results: dict, fixed: list[float], exits: list[float]) -> None:
    """Top-1 against ``fixed`` (a fixed T = t for every sample) and against ``exits`` (the early-exit
    rules, one line per kind, each point labelled with its threshold), and the ANN's top-1 as a line."""
    rows = results["early_exit"]
    ax.plot(fixed, results["snn_top1"], marker="o", label="SNN, every sample t steps")
    for kind, marker in zip(dict.fromkeys(r["rule"] for r in rows), "s^vD", strict=False):
        points = [(x, r) for x, r in zip(exits, rows, strict=True) if r["rule"] == kind]
        ax.plot([x for x, _ in points], [r["snn_top1"] for _, r in points], marker=marker,
                label=f"SNN, early exit by {EXIT_LABELS.get(kind, kind)}")  # fmt: skip
        for x, row in points:
            ax.annotate(f"{row['value']:g}", (x, row["snn_top1"]), fontsize=6, xytext=(3, -8),
                        textcoords="offset points")  # fmt: skip
    ax.axhline(results["ann_top1"], color="gray", linestyle="--", label=f"ANN ({results['ann_top1']:.2f} %)")


def plot_early_exit(results: dict, path: Path) -> Path:
    """Top-1 against the mean number of steps per sample: fixed steps and early exit
    (:mod:`transpike.exits`)."""
    steps = list(range(1, len(results["snn_top1"]) + 1))
    with _figure(path) as ax:
        _fixed_and_exits(ax, results, steps, [r["mean_steps"] for r in results["early_exit"]])
        _against(ax, steps, "mean time steps per sample", "top-1 accuracy (%)", "lower right")
    return path


def plot_accuracy_energy(results: dict, path: Path) -> Path:
    """Top-1 against the SNN/ANN energy (ECMT form) it costs: fixed steps and early exit (the
    latter's energy an estimate, :func:`transpike.exits.exit_table`)."""
    exits = [r["energy_ratio"] for r in results["early_exit"]]
    with _figure(path) as ax:
        _fixed_and_exits(ax, results, results["energy"]["energy_ratio"], exits)
        _against(ax, None, "energy SNN / ANN (ECMT form)", "top-1 accuracy (%)", "lower right")
    return path


def plot_energy(energy: dict, path: Path) -> Path:
    """SNN/ANN energy after t steps: ECMT's form, the full form and SIT's formula, at the energy
    per operation it names."""
    steps = list(range(1, len(energy["energy_ratio"]) + 1))
    with _figure(path) as ax:
        ax.plot(steps, energy["energy_ratio"], marker="o", label="ECMT form (synaptic ACs)")
        ax.plot(steps, energy["energy_ratio_full"], marker="s", label="full (+ analog float work)")
        ax.plot(steps, energy["energy_ratio_sit"], marker="^", label="SIT formula")
        ax.axhline(1.0, color="gray", linestyle="--", label="ANN")
        _prices(ax, energy["e_mac_pj"], energy["e_ac_pj"], energy["e_float_pj"])
        _against(ax, steps, "time steps t", "energy SNN / ANN")
    return path


def plot_energy_breakdown(energy: dict, path: Path) -> Path:
    """The SNN's energy per sample after t steps (full form), stacked by where it goes
    (:meth:`~transpike.energy.EnergyReport.breakdown`), against its ANN's."""
    report = EnergyReport.from_dict(energy)
    steps = list(range(1, report.time_steps + 1))
    series = [report.breakdown(t) for t in steps]
    parts = [part for part in PARTS if any(row.get(part, 0.0) > 0 for row in series)]
    with _figure(path) as ax:
        ax.stackplot(steps, [[row.get(part, 0.0) / 1e6 for row in series] for part in parts],
                     labels=[PARTS[part] for part in parts], alpha=0.85)  # fmt: skip
        ax.axhline(report.ann_energy / 1e6, color="black", linestyle="--", label="ANN")
        _prices(ax, report.e_mac, report.e_ac, report.e_float)
        _against(ax, steps, "time steps t", "energy per sample (µJ)", "upper left")
    return path


def plot_firing_rates(energy: dict, path: Path) -> Path:
    """Mean spikes per neuron per step at every MT site, over all T steps."""
    sites = energy["sites"]
    with _figure(path, (6, max(3.0, 0.16 * len(sites)))) as ax:
        ax.barh(range(len(sites)), [site["cumulative_firing_rate"][-1] for site in sites])
        ax.set_yticks(range(len(sites)), [site["path"].removesuffix(".neuron") for site in sites], fontsize=5)
        ax.invert_yaxis()
        ax.set_xlabel("spikes per neuron per step")
    return path


def plot_spike_levels(energy: dict, path: Path) -> Path:
    """Spikes per threshold level and sign, all MT sites and steps (most land on θ1 and -θ2)."""
    histogram = energy["level_histogram"]
    with _figure(path, (5, 3.2)) as ax:
        if histogram:
            levels = list(range(len(histogram[0])))
            ax.bar([k - 0.2 for k in levels], histogram[0], width=0.4, label="positive: θ1·2^(k/s)")
            ax.bar([k + 0.2 for k in levels], histogram[1], width=0.4, label="negative: -θ2·2^(k/s)")
            ax.set_yscale("log")
            _against(ax, levels, "level k", "spikes per sample (all steps)")
    return path


#: what ``eval`` may sweep (a results key ``OVER_sweep``), and its axis label
SWEEP_AXES = {"blocks": "converted blocks k", "weight_bits": "synaptic weight bits"}


def sweep_label(value: int | None) -> str:
    """A sweep point as printed: its number, or "float" for synapses left unrounded."""
    return "float" if value is None else str(value)


def plot_sweep(results: dict, over: str, path: Path) -> Path:
    """SNN top-1 after T steps, and the share of samples whose SNN top-1 is the ANN's, against the
    swept option ``over``: the number of converted Transformer blocks, or the synaptic weights'
    bits (one tick per value, in the order given; "float" for unrounded)."""
    sweep = results[f"{over}_sweep"]
    values = [row[over] for row in sweep]
    xs = values if over == "blocks" else list(range(len(values)))
    with _figure(path) as ax:
        top1, intervals = ([row[key][-1] for row in sweep] for key in ("snn_top1", "difference_ci95"))
        ax.errorbar(
            xs,
            top1,
            yerr=intervals,
            marker="o",
            capsize=3,
            label="SNN (bars: 95 % interval of SNN - ANN)",
        )
        ax.plot(xs, [row["agreement"][-1] for row in sweep], marker="s", linestyle=":",
                label="SNN: same top-1 as the ANN")  # fmt: skip
        ax.axhline(results["ann_top1"], color="gray", linestyle="--", label="ANN")
        if over == "weight_bits":  # what the SNN tends to: the ANN holding the rounded weights
            rounded = [row.get("rounded_ann_top1") for row in sweep]
            rounded = [results["ann_top1"] if value is None else value for value in rounded]
            ax.plot(xs, rounded, marker="x", color="gray", linestyle="-.", label="ANN, rounded weights")
        _against(ax, xs, SWEEP_AXES[over], f"top-1 after T = {results['time_steps']} (%)", "lower left")
        if over == "weight_bits":
            ax.set_xticks(xs, [sweep_label(value) for value in values])
    return path


def plot_trace(trace: dict, path: Path) -> Path:
    """Each converted module's error against the ANN, in the order the modules run, after a few t
    (:func:`transpike.trace.trace`); MT neurons marked, since what they add is the conversion's."""
    rows = trace["rows"][:-1]
    T = trace["time_steps"]
    shown = sorted({1, max(1, T // 4), T})
    with _figure(path, (7, 3.5)) as ax:
        index = list(range(len(rows)))
        for t in shown:
            errors = [r["error"][t - 1] if r["error"][t - 1] is not None else float("nan") for r in rows]
            line = ax.plot(index, errors, linewidth=1, label=f"t = {t}")[0]
            neurons = [i for i, r in enumerate(rows) if r["kind"] == "neuron"]
            ax.plot(neurons, [errors[i] for i in neurons], ".", markersize=2, color=line.get_color())
        ax.set_yscale("log")
        ax.set_xlabel("converted module, in the order they run (dots: MT neurons)")
        ax.set_ylabel("relative error vs ANN")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return path
