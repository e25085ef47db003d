"""Result files of an evaluation in one directory: results.json, results.csv, accuracy.png,
early_exit.csv, early_exit.png and, with energy accounting, layers.csv, sites.csv, energy.png,
firing_rates.png, spike_levels.png and accuracy_energy.png; those of a trace (trace.json,
trace.csv, trace.png) and of a comparison (compare.json, compare.csv, compare.png).

A directory that already holds files is never written into unless ``force`` is given, and each
file is written atomically, so an interrupted run leaves the previous results intact.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from .exits import ExitRule
from .io import atomic_write
from .plots import (
    SWEEP_AXES,
    plot_accuracy,
    plot_accuracy_energy,
    plot_comparison,
    plot_early_exit,
    plot_energy,
    plot_energy_breakdown,
    plot_firing_rates,
    plot_spike_levels,
    plot_sweep,
    plot_trace,
    sweep_label,
)


def check_output_dir(path: str | Path, force: bool) -> Path:
    """The output directory, refused if it holds files and ``force`` is False."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise ValueError(f"--out {path}: directory is not empty; pass --force to write into it")
    return path


def write_results(results: dict, out: Path) -> list[Path]:
    """Write the JSON, the per-t CSV table and the accuracy plot; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path, png_path = out / "results.json", out / "results.csv", out / "accuracy.png"
    atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(results, indent=2) + "\n"))

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "t",
                    "snn_top1",
                    "ann_top1",
                    "difference",
                    "snn_top5",
                    "ann_top5",
                    "difference_ci95",
                    "agreement",
                ]
            )
            ann1, ann5 = results["ann_top1"], results["ann_top5"]
            columns = zip(*(results[key] for key in ("snn_top1", "snn_top5", "difference_ci95", "agreement")),
                          strict=True)  # fmt: skip
            for t, (top1, top5, interval, same) in enumerate(columns, 1):
                row = [top1, ann1, top1 - ann1, top5, ann5, interval, same]
                writer.writerow([t, *(f"{value:.4f}" for value in row)])

    atomic_write(csv_path, write_csv)
    atomic_write(png_path, lambda tmp: plot_accuracy(results, tmp))
    paths = [json_path, csv_path, png_path]
    if "early_exit" in results:
        paths += [out / "early_exit.csv", out / "early_exit.png"]
        atomic_write(paths[-2], lambda tmp: _write_exit_csv(results, tmp))
        atomic_write(paths[-1], lambda tmp: plot_early_exit(results, tmp))
    for over in SWEEP_AXES:
        if f"{over}_sweep" in results:
            paths.append(out / f"accuracy_vs_{over}.png")
            atomic_write(paths[-1], lambda tmp, over=over: plot_sweep(results, over, tmp))
    if "energy" in results:
        energy = results["energy"]
        for name, table, scalars, series in (
            ("layers", energy["layers"], ["path", "kind", "ann_macs"], ["snn_acs", "input_firing_rate"]),
            ("sites", energy["sites"], ["path", "neurons"], ["firing_rate"]),
        ):
            paths.append(out / f"{name}.csv")
            atomic_write(paths[-1], lambda tmp, rows=(table, scalars, series): _write_series_csv(tmp, *rows))
        for name, plot in (
            ("energy", plot_energy),
            ("energy_breakdown", plot_energy_breakdown),
            ("firing_rates", plot_firing_rates),
            ("spike_levels", plot_spike_levels),
        ):
            paths.append(out / f"{name}.png")
            atomic_write(paths[-1], lambda tmp, plot=plot: plot(results["energy"], tmp))
        if "early_exit" in results:
            paths.append(out / "accuracy_energy.png")
            atomic_write(paths[-1], lambda tmp: plot_accuracy_energy(results, tmp))
    return paths


def _write_series_csv(path: Path, rows: list[dict], scalars: list[str], series: list[str]) -> None:
    """One line per row: its ``scalars``, then each of its ``series`` after t = 1..T (``NAME_tT``);
    the energy report's layers (synaptic ACs and input firing rate per t) and MT sites (firing
    rate per t), for tables and plots of one's own."""
    steps = len(rows[0][series[0]]) if rows else 0
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(scalars + [f"{name}_t{t}" for name in series for t in range(1, steps + 1)])
        for row in rows:
            values = [f"{v:.6g}" for name in series for v in row[name]]
            writer.writerow([row[name] for name in scalars] + values)


def _write_exit_csv(results: dict, path: Path) -> None:
    """One line per early-exit rule (its kind and threshold): top-1, its difference to the ANN's
    with the 95 % interval, top-5, the mean number of steps, the energy estimate (empty without
    energy accounting), the share of samples whose top-1 at exit is the ANN's, and the share
    exiting after each t."""
    rows = results["early_exit"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        head = [
            "rule",
            "value",
            "snn_top1",
            "difference",
            "difference_ci95",
            "snn_top5",
            "mean_steps",
            "energy_ratio",
            "energy_ratio_full",
            "agreement",
        ]
        writer.writerow(head + [f"exit_t{t}" for t in range(1, len(rows[0]["exits"]) + 1)])
        for row in rows:
            energy = [f"{row[k]:.4f}" if k in row else "" for k in ("energy_ratio", "energy_ratio_full")]
            values = [row["snn_top1"], row["snn_top1"] - results["ann_top1"], row["difference_ci95"],
                      row["snn_top5"], row["mean_steps"]]  # fmt: skip
            cells = [
                row["rule"],
                f"{row['value']:g}",
                *(f"{v:.4f}" for v in values),
                *energy,
                f"{row['agreement']:.4f}",
            ]
            writer.writerow(cells + [f"{share:.6f}" for share in row["exits"]])


def write_trace(trace: dict, out: Path) -> list[Path]:
    """Write a trace (:meth:`transpike.trace.Trace.to_dict` with what produced it) as trace.json,
    trace.csv (one line per module: its errors after t = 1..T, its input's, and a neuron's share of
    outputs at its top level in each step) and trace.png."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "trace.json", out / "trace.csv", out / "trace.png"]
    atomic_write(paths[0], lambda tmp: tmp.write_text(json.dumps(trace, indent=1) + "\n"))
    steps = range(1, trace["time_steps"] + 1)

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["index", "path", "kind", "type", "scale"]
                + [f"error_t{t}" for t in steps]
                + [f"input_error_t{t}" for t in steps]
                + [f"saturation_t{t}" for t in steps]
            )
            for index, row in enumerate(trace["rows"]):
                missing = [None] * len(steps)
                values = row["error"] + (row["input_error"] or missing) + (row["saturation"] or missing)
                cells = ["" if v is None else f"{v:.6g}" for v in values]
                writer.writerow([index, row["path"], row["kind"], row["type"], f"{row['scale']:.6g}", *cells])

    atomic_write(paths[1], write_csv)
    atomic_write(paths[2], lambda tmp: plot_trace(trace, tmp))
    return paths


def format_sweep_table(ann_top1: float, sweep: list[dict], over: str) -> str:
    """Accuracy after T steps at each value of the swept option ``over``: the number of converted
    blocks (SIT Tables 2-4) or the synaptic weights' bits, with the top-1 of the ANN holding the
    rounded weights (the float ANN's for "float")."""
    name, bits = over.replace("_", " "), over == "weight_bits"
    head = f"{name:>11}   SNN top-1 at T   vs ANN, 95 % interval   same top-1 as ANN"
    lines = ["", head + ("   ANN with rounded weights" if bits else "")]
    for row in sweep:
        top1, interval, same = (row[key][-1] for key in ("snn_top1", "difference_ci95", "agreement"))
        versus = f"{top1 - ann_top1:+6.2f} ± {interval:<12.2f}"
        line = f"{sweep_label(row[over]):>11}   {top1:12.2f} %   {versus}   {same:15.2f} %"
        if bits:
            rounded = row.get("rounded_ann_top1")
            line += f"   {ann_top1 if rounded is None else rounded:22.2f} %"
        lines.append(line)
    return "\n".join(lines)


def format_table(results: dict) -> str:
    """The per-t table printed by the command line."""
    ann = results["ann_top1"]
    resumed = results.get("resumed_samples", 0)
    counted = f" ({resumed} of them counted by the interrupted run)" if resumed else ""
    head = f"ANN top-1: {ann:.2f} %, top-5: {results['ann_top5']:.2f} % on {results['num_samples']} samples"
    if results.get("scored_against") == "ann":
        head = (f"scored against the ANN's own top-1, not labels: SNN top-1 is the share of the "
                f"{results['num_samples']} samples decided as the ANN decides")  # fmt: skip
    lines = [head + counted, "", "  t   SNN top-1   vs ANN, 95 % interval   SNN top-5   same top-1 as ANN"]
    columns = zip(
        *(results[key] for key in ("snn_top1", "difference_ci95", "snn_top5", "agreement")), strict=True
    )
    for t, (top1, interval, top5, same) in enumerate(columns, 1):
        versus = f"{top1 - ann:+6.2f} ± {interval:<12.2f}"
        lines.append(f"{t:>3}   {top1:8.2f} %   {versus}   {top5:8.2f} %   {same:15.2f} %")
    matched = results.get("matches_ann_from")
    steps = len(results["snn_top1"])
    lines.append(
        f"from t = {matched} on, the 95 % interval of SNN - ANN holds 0: these samples cannot tell them apart"
        if matched
        else f"at t = {steps} the 95 % interval of SNN - ANN still excludes 0"
    )  # fmt: skip
    options = results.get("options", {})
    if options.get("weight_bits"):
        per = "output channel" if options["weight_granularity"] == "channel" else "layer"
        chosen = ", of least squared error" if options.get("weight_scale") == "mse" else ""
        bits, at = options["weight_bits"], options.get("weight_bits_at") or {}
        apart = "".join(f", {path}: {sweep_label(b)}" for path, b in at.items())
        lines.append(f"synaptic weights rounded to {bits} bits (one scale per {per}{chosen}{apart}), the "
                     "ANN's float: SNN - ANN includes the rounding")  # fmt: skip
        rounded = results.get("rounded_ann_top1")
        if rounded is not None:
            lines.append(f"the ANN with the rounded weights: top-1 {rounded:.2f} % ({rounded - ann:+.2f}), "
                         "which the SNN tends to as t grows")  # fmt: skip
    calibrated = results.get("calibration_samples")
    if calibrated is not None:  # None: a network saved before its calibration samples were kept
        lines.append(
            f"{calibrated} of these samples were calibration samples: the thresholds were fitted on them"
            if calibrated
            else "none of these samples was a calibration sample"
        )  # fmt: skip
    apart = results.get("kept_apart")
    if apart:
        lines.append(f"on the other {apart['samples']} alone: ANN top-1 {apart['ann_top1']:.2f} %, SNN "
                     f"{apart['snn_top1'][-1]:.2f} % after t = {steps}")  # fmt: skip
    return "\n".join(lines)


def write_classes(table: dict, path: Path, names: list[str] | None = None) -> Path:
    """One line per class (:func:`~transpike.scores.per_class`): its index and name (``names``,
    by index: an image folder's or a list's classes; empty without), its samples, the ANN's top-1 and
    the SNN's after every t (percent), then at T the difference, the samples right by the ANN only
    and by the SNN only, and the exact McNemar p-value, raw and Holm-adjusted over the classes."""
    steps = table["snn_right"].shape[1]
    ann = 100.0 * table["ann_right"] / table["samples"]
    snn = 100.0 * table["snn_right"] / table["samples"][:, None]
    percent = torch.cat([ann[:, None], snn, (snn[:, -1] - ann)[:, None]], 1)  # [C, T + 2]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            per_t = [f"snn_top1_t{t}" for t in range(1, steps + 1)]
            writer.writerow(["class", "name", "samples", "ann_top1", *per_t, "difference", "lost", "gained",
                             "p_value", "p_holm"])  # fmt: skip
            for i, c in enumerate(table["classes"].tolist()):
                counts = [int(table[key][i]) for key in ("samples", "lost", "gained")]
                ps = [f"{table[key][i].item():.4g}" for key in ("p", "p_holm")]
                cells = [c, class_name(c, names), counts[0], *(f"{v:.4f}" for v in percent[i].tolist())]
                writer.writerow([*cells, *counts[1:], *ps])

    atomic_write(path, write)
    return path


def class_name(index: int, names: list[str] | None) -> str:
    """A class's name where the data names its classes (``names`` by index), else nothing."""
    return names[index] if names and 0 <= index < len(names) else ""


def format_classes(table: dict, names: list[str] | None = None) -> str:
    """One line: the classes whose SNN top-1 at T differs from the ANN's beyond chance (Holm-adjusted
    exact McNemar p < 0.05), the largest differences first, by index and name, or that none does."""
    points = 100.0 * (table["snn_right"][:, -1] - table["ann_right"]) / table["samples"]
    steps = table["snn_right"].shape[1]
    classes, p_holm = table["classes"].tolist(), table["p_holm"].tolist()
    return class_differences(classes, points.tolist(), p_holm, steps, names)


def class_differences(
    classes: list[int], points: list[float], p_holm: list[float], t: int, names: list[str] | None,
    against: str = "the ANN",
) -> str:  # fmt: skip
    """One line naming the classes whose difference (``points``, per class) is beyond chance at
    t (Holm-adjusted p < 0.05), the largest differences first, or saying that none is."""
    differ = sorted((i for i, p in enumerate(p_holm) if p < 0.05), key=lambda i: -abs(points[i]))
    head, chance = f"per class at t = {t}:", f"from {against} beyond chance (Holm, 5 %)"
    if not differ:
        return f"{head} none of the {len(classes)} differs {chance}"
    labels = [" ".join(filter(None, [str(c), class_name(c, names)])) for c in classes]
    listed = ", ".join(f"{labels[i]} ({points[i]:+.1f})" for i in differ[:10])
    more = f" and {len(differ) - 10} more" if len(differ) > 10 else ""
    return f"{head} {len(differ)} of {len(classes)} differ {chance}: {listed}{more}"


def format_exit_table(results: dict) -> str:
    """The early-exit table printed by the command line (:mod:`transpike.exits`)."""
    rows, ann = results["early_exit"], results["ann_top1"]
    energy = "energy_ratio" in rows[0]
    head = f"  {'rule':<34}   SNN top-1   vs ANN, 95 % interval   same top-1 as ANN   mean t"
    head += "   energy SNN/ANN, estimate: ECMT form   full form" if energy else ""
    lines = ["early exit: each sample stops after the first t where its output meets the rule (or T)", head]
    for row in rows:
        rule = str(ExitRule(row["rule"], row["value"]))
        line = f"  {rule:<34}   {row['snn_top1']:8.2f} %   {row['snn_top1'] - ann:+6.2f} ± "
        line += f"{row['difference_ci95']:<12.2f}   {row['agreement']:15.2f} %   {row['mean_steps']:6.2f}"
        costs = f"   {row['energy_ratio']:34.3f}   {row['energy_ratio_full']:9.3f}" if energy else ""
        lines.append(line + costs)
    return "\n".join(lines)


def write_comparison(comparison: dict, out: Path) -> list[Path]:
    """Write a comparison (:func:`transpike.compare.compare`) as compare.json, compare.csv (one line
    per compared evaluation and t, with each run's share of samples decided as the ANN decides and
    the McNemar p of their difference, where the ANNs are the same), compare_classes.csv (one
    line per compared evaluation and class, at the t the classes were compared at) and
    compare.png."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "compare.json", out / "compare.csv", out / "compare_classes.csv", out / "compare.png"]
    atomic_write(paths[0], lambda tmp: tmp.write_text(json.dumps(comparison, indent=2) + "\n"))
    names = ["t", "first_top1", "second_top1", "difference", "difference_ci95", "p_value", "p_holm"]

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            energy = ["first_energy", "second_energy"]
            agreement = ["first_agreement", "second_agreement", "agreement_p_value"]
            writer.writerow(["reference", "other", *names, "first_only", "second_only", *energy, *agreement])
            for entry in comparison["comparisons"]:
                kept = entry["agreement"] or [None] * len(entry["rows"])  # None: the ANNs differ
                for row, same in zip(entry["rows"], kept, strict=True):
                    values = [f"{row[k]:.6g}" for k in names[1:]]
                    costs = ["" if row[k] is None else f"{row[k]:.6g}" for k in energy]
                    shares = (
                        [""] * 3
                        if same is None
                        else [f"{same[k]:.6g}" for k in ("first_top1", "second_top1", "p_value")]
                    )
                    writer.writerow([comparison["reference"]["path"], entry["path"], row["t"], *values,
                                     row["first_only"], row["second_only"], *costs, *shares])  # fmt: skip

    class_names = comparison["reference"]["about"].get("class_names")
    columns = ["samples", "first_top1", "second_top1", "difference", "first_only", "second_only", "p_value",
               "p_holm"]  # fmt: skip

    def write_classes_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["reference", "other", "t", "class", "name", *columns])
            for entry in comparison["comparisons"]:
                table, t = entry["classes"], entry["classes_t"]
                first = [comparison["reference"]["path"], entry["path"], t]
                for i, c in enumerate(table["classes"]):
                    values = [f"{table[k][i]:.6g}" for k in columns]
                    writer.writerow([*first, c, class_name(c, class_names), *values])

    atomic_write(paths[1], write_csv)
    atomic_write(paths[2], write_classes_csv)
    atomic_write(paths[3], lambda tmp: plot_comparison(comparison, tmp))
    return paths


def _shift(row: dict) -> str:
    """One paired comparison in words: "97.08 % -> 97.50 %: +0.42 ± 0.60, McNemar p 0.23"."""
    return (f"{row['first_top1']:.2f} % -> {row['second_top1']:.2f} %: {row['difference']:+.2f} ± "
            f"{row['difference_ci95']:.2f}, McNemar p {row['p_value']:.2g}")  # fmt: skip


def _paired(row: dict) -> str:
    """A paired difference, its 95 % interval, McNemar p-value and the Holm-adjusted one:
    "+1.25 ± 0.80   0.0021   0.013"."""
    return (f"{row['difference']:+6.2f} ± {row['difference_ci95']:<5.2f}   {row['p_value']:<8.2g} "
            f"{row['p_holm']:<8.2g}")  # fmt: skip


def format_comparison(comparison: dict) -> str:
    """The tables printed by ``transpike compare``: each evaluation against the reference."""
    reference = comparison["reference"]
    about = reference["about"]
    lines = [f"reference: {reference['path']} ({about.get('model')} on {about.get('data')}, "
             f"{comparison['num_samples']} samples)"]  # fmt: skip
    for entry in comparison["comparisons"]:
        differs = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in entry["differs"].items()) or "nothing"
        ann = entry["ann"]
        same = f"the same top-1 for every sample ({ann['first_top1']:.2f} %)"
        ann_line = same if entry["same_ann"] else _shift(ann)
        head = "    t   reference   this run   difference, 95 % interval   p        p (Holm)"
        head += "   right by one only   energy/ANN (full form)"
        lines += ["", f"{entry['path']} against the reference", f"  options that differ: {differs}",
                  f"  ANN: {ann_line}", head]  # fmt: skip
        for row in entry["rows"]:
            costs = (row["first_energy"], row["second_energy"])
            energy = "" if None in costs else f"{costs[0]:.3f} -> {costs[1]:.3f}"
            counts = f"{row['first_only']:>12} / {row['second_only']:<6}"
            lines.append(f"  {row['t']:>3}   {row['first_top1']:7.2f} %  {row['second_top1']:7.2f} %   "
                         f"{_paired(row)}{counts}   {energy}".rstrip())  # fmt: skip
        if entry["agreement"]:
            last = entry["agreement"][-1]
            lines.append(f"  same top-1 as the ANN at t = {len(entry['agreement'])}: {_shift(last)} "
                         f"({last['first_only']} / {last['second_only']} kept by one only)")  # fmt: skip
        table = entry["classes"]
        columns = (table["classes"], table["difference"], table["p_holm"], entry["classes_t"])
        lines.append("  " + class_differences(*columns, about.get("class_names"), "the reference"))
    lines += ["", "difference: this run's top-1 - the reference's, points; the interval and p count only the "
              "samples one of them gets right; p: McNemar's exact test, each t on its own; p (Holm): "
              "adjusted over the t compared; energy: each network's after t steps over its ANN's, the "
              "reference's -> this run's"]  # fmt: skip
    return "\n".join(lines)
