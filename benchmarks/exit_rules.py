"""Which early-exit rule stops soonest for the same accuracy? The four rules of ``transpike.exits``.

The digits ViT (``transpike.digits``, calibrated on the training split) is evaluated on the test
split with ``transpike.evaluate`` at T = 8, with every rule at a range of thresholds read from the
same run: confidence (SEENN), normalized entropy (DT-SNN), the top-1 - top-2 probability margin
(SNNCutoff) and a top-1 class unchanged for s steps. Each rule's thresholds trace a curve of top-1
against the mean number of steps; between two thresholds, sending each sample to one or the other
at random spends and scores the linear mix, so a curve is read at a given mean by linear
interpolation along its upper envelope (the points no other point beats with fewer steps). Fixed
steps are read the same way from the fixed-t accuracies. Per configuration: top-1 - ANN's at a mean
of at most 1.5, 2, 2.5 and 3 steps, and the fewest mean steps within 0.5 points (about 3 test images) of
the ANN.

    python benchmarks/exit_rules.py [--out benchmarks/out/exit_rules.json]
"""

from __future__ import annotations

from itertools import pairwise

from accuracy import digits_setup, write_output

import transpike
from transpike.evaluate import evaluate
from transpike.exits import ExitRule

T = 8
CONFIGS = {
    "paper default": {},
    "levels=1 (signed IF)": dict(levels=1),
    "mse": dict(threshold="mse"),
    "mse + nearest": dict(threshold="mse", rounding="nearest"),
    "SIT (K = 12)": dict(method="sit"),
}
THRESHOLDS = {
    "confidence": (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999),
    "entropy": (0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01, 0.005, 0.001),
    "margin": (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999),
    "stable": tuple(range(1, T)),
}
MEANS = (1.5, 2.0, 2.5, 3.0)
WITHIN = 0.5  # points of top-1 below the ANN's


def envelope(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (mean steps, top-1) points that no other point beats with as few steps, by steps, and
    of those the upper concave hull: what mixing two thresholds at random can reach."""
    hull: list[tuple[float, float]] = []
    for point in sorted(points, key=lambda p: (p[0], -p[1])):
        if hull and point[1] <= hull[-1][1]:
            continue  # more steps for no more accuracy
        while len(hull) >= 2 and cross(hull[-2], hull[-1], point) >= 0:
            hull.pop()  # hull[-1] lies under the mix of its neighbours
        hull.append(point)
    return hull


def cross(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def at_mean(hull: list[tuple[float, float]], steps: float) -> float | None:
    """The best top-1 on the envelope for a mean of at most ``steps`` (None: the rule cannot stop
    that early)."""
    if steps < hull[0][0]:
        return None
    for (s0, a0), (s1, a1) in pairwise(hull):
        if s0 <= steps <= s1:
            return a0 + (steps - s0) * (a1 - a0) / (s1 - s0)
    return hull[-1][1]  # past the envelope's end, more steps buy no more accuracy


def fewest_steps(hull: list[tuple[float, float]], target: float) -> float | None:
    """The fewest mean steps at which the envelope reaches ``target`` top-1 (None: never)."""
    if hull[0][1] >= target:
        return hull[0][0]
    for (s0, a0), (s1, a1) in pairwise(hull):
        if a0 < target <= a1:
            return s0 + (target - a0) * (s1 - s0) / (a1 - a0)
    return None


def main() -> None:
    args, model, x_train, test = digits_setup(__doc__, "benchmarks/out/exit_rules.json")
    rules = [ExitRule(kind, value) for kind, values in THRESHOLDS.items() for value in values]
    rows = []
    for name, options in CONFIGS.items():
        snn = transpike.convert(model, x_train.split(256), **options)
        result = evaluate(snn, model, test, T, batch_size=256, progress=False, exits=rules)
        ann = result["ann_top1"]
        curves = {"fixed steps": [(t, a) for t, a in enumerate(result["snn_top1"], 1)]}
        for kind in THRESHOLDS:
            rule_rows = (r for r in result["early_exit"] if r["rule"] == kind)
            curves[kind] = [(r["mean_steps"], r["snn_top1"]) for r in rule_rows]
        hulls = {kind: envelope(points) for kind, points in curves.items()}
        summary = {
            kind: dict(
                at_mean={m: None if (a := at_mean(hull, m)) is None else a - ann for m in MEANS},
                steps_within=fewest_steps(hull, ann - WITHIN),
            )
            for kind, hull in hulls.items()
        }
        rows.append(dict(config=name, options=options, ann_top1=ann, snn_top1=result["snn_top1"],
                         early_exit=result["early_exit"], summary=summary))  # fmt: skip
        print(f"{name}: ANN {ann:.2f} %, SNN " + " ".join(f"{a:.2f}" for a in result["snn_top1"]), flush=True)

    write_output(args.out, test, rows, time_steps=T)

    def cell(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    means = " | ".join(f"mean {m:g}" for m in MEANS)
    print(f"\n| configuration | rule | {means} | steps within {WITHIN} of the ANN |")
    print("|---|---|" + "---|" * len(MEANS) + "---|")
    for row in rows:
        for kind, entry in row["summary"].items():
            cells = " | ".join(cell(entry["at_mean"][m], "+.2f") for m in MEANS)
            print(f"| {row['config']} | {kind} | {cells} | {cell(entry['steps_within'], '.2f')} |")


if __name__ == "__main__":
    main()
