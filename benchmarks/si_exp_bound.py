"""Lower bounds on SI-exp's error against exp on the paper's 10 000 points of [-1, 1], for any T, h, d.

Two facts about a K-step SI-exp neuron (``tests/test_sit.py`` checks both on random parameters):
as x grows, its spike pattern changes only by the first changing step going 0 -> 1, so the patterns
occur in lexicographic order and the output has at most 2^K runs of equal values over all of R;
and after its first step it is the (K-1)-step neuron G of steps 2..K: f(x) = G(x) for x < T(1)
and f(x) = d(1) + G(x - h(1)) from T(1) on.

**Count bound.** Nothing with at most N runs on the points beats the best N-run staircase, which
dynamic programming gives exactly (optimal 1-D segmentation). So RMSE(K) >= best(2^K).

**One-split bound.** Let I be where the two windows G reads overlap: [-1, T(1)) and
[T(1) - h(1), 1 - h(1)]. If G has m pieces meeting I (n1 points of x in I), then:
- outside I and I + h(1), f has at most 2^(K-1) - m + 2 runs on at least n - 2·n1 - 1 points;
- on the at least 2·n1 - 1 points inside, at most 2m runs;
- at least n1 - m - 2 pairs (x, x') = (v, v + h(1) + δ) (δ < the grid step) read G at the same
  value, so f(x') - f(x) = d(1) while exp(x') - exp(x) = exp(x)·c with c >= e^|I| - 1 (the two
  copies are disjoint, so h(1) > |I|): the pair errors satisfy E² + E'² >= (d(1) - c·exp(x))²/2,
  at least c²/2 times the sum of squares of exp about its mean on those pairs' x.
Each sum of squares is at least that of the same number of points packed at the left end of
[-1, 1] (moving points left, with gaps closed, only shrinks differences of exp), so every term is
an entry of one table: best[P][p], the least sum of squares of the first p points in at most P
runs. The bound is the least over n1 and m of outside + max(pair term, inside).

Also reported, for each K: the shipped fit's runs, its RMSE and the best staircase of as many runs;
and the successive-approximation neuron (a step that always fires, then x's binary digits: 2^(K-1)
runs) with least-squares weights.

    python benchmarks/si_exp_bound.py [--largest 10]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import numpy as np
import torch

from transpike.sit import FIT_POINTS, PAPER_RANGE, fitted_parameters, fs_neuron
from transpike.sit.fit import _initial, _rmse

PAPER_RMSE = 0.0015413


def staircase_table(y: np.ndarray, runs: int) -> np.ndarray:
    """best[P, p]: the least Σ(f - y)² over the first p of the points whose targets are ``y`` (sorted,
    as exp on increasing x is) for any f with at most P runs of equal values, P = 0..``runs``.

    The best value of a run is its mean, so a run y[i:j] costs Σy² - (Σy)²/(j - i) (prefix sums),
    and cost(P, j) = min over i of cost(P - 1, i) + run(i, j). For sorted y the best i does not
    decrease with j (least-squares run costs on sorted data satisfy the quadrangle inequality, as
    in exact 1-D k-means), so each j is solved with the candidates between the best i of its
    neighbours (divide and conquer); on 300 points this equals the full O(P·n²) recursion to 1e-14.
    """
    n = y.shape[0]
    s1, s2 = np.concatenate([[0.0], np.cumsum(y)]), np.concatenate([[0.0], np.cumsum(y * y)])

    def run(i: np.ndarray, j: np.ndarray | int) -> np.ndarray:  # cost of the runs y[i:j]
        return s2[j] - s2[i] - (s1[j] - s1[i]) ** 2 / (j - i)

    best = np.zeros((runs + 1, n + 1))
    best[0, 1:] = math.inf
    cost = run(np.zeros(1, dtype=int), np.arange(1, n + 1))  # cost[j - 1]: y[:j] in exactly one run
    best[1, 1:] = cost
    for layer in range(2, runs + 1):
        new = np.full(n, math.inf)
        todo = [(layer - 1, n - 1, layer - 2, n - 2)]  # ends j - 1 in [lo, hi], splits in [first, last]
        while todo:
            lo, hi, first, last = todo.pop()
            if lo > hi:
                continue
            mid = (lo + hi) // 2
            splits = np.arange(first, min(last, mid - 1) + 1)
            values = cost[splits] + run(splits + 1, mid + 1)
            k = int(values.argmin())
            new[mid] = values[k]
            todo += [(lo, mid - 1, first, splits[k]), (mid + 1, hi, splits[k], last)]
        cost = new
        best[layer, 1:] = np.minimum(cost, best[layer - 1, 1:])  # at most `layer` runs
    return best


def one_split_bound(best: np.ndarray, steps: int, spacing: float) -> float:
    """The least Σ(f - exp)² any ``steps``-step SI-exp can reach, from its first step (module doc)."""
    n, half = best.shape[1] - 1, 2 ** (steps - 1)
    n1 = np.arange(n // 2 + 1)[:, None]  # points of x in the overlap I
    m = np.arange(half + 1)[None, :]  # pieces of G meeting I
    at = lambda p: np.clip(p, 0, None)  # noqa: E731  (fewer than no points: none)
    outside = best[half - m + 2, at(n - 2 * n1 - 1)]
    inside = best[np.minimum(2 * m, best.shape[0] - 1), at(2 * n1 - 1)]
    pairs = 0.5 * np.expm1(at(n1 - 1) * spacing) ** 2 * best[1, at(n1 - m - 2)]
    bound = outside + np.maximum(pairs, inside)
    bound[1:, 0] = math.inf  # points in I lie in some piece of G
    return float(bound.min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--largest", type=int, default=10, help="bounds for K = 4..LARGEST")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/si_exp_bound.json"))
    args = parser.parse_args()
    x = torch.linspace(*PAPER_RANGE, FIT_POINTS, dtype=torch.float64)
    best = staircase_table(x.exp().numpy(), 2**args.largest)
    spacing = (PAPER_RANGE[1] - PAPER_RANGE[0]) / (FIT_POINTS - 1)
    rmse = lambda sse: math.sqrt(sse / FIT_POINTS)  # noqa: E731
    least_runs = int(np.argmax(best[:, -1] <= FIT_POINTS * PAPER_RMSE**2))
    rows = []
    for steps in range(4, 17):
        fit = fitted_parameters(steps, shifted=False)
        T, h, d = (torch.tensor(fit[n], dtype=torch.float64) for n in ("T", "h", "d"))
        runs = int((fs_neuron(x, T, h, d).diff() != 0).sum()) + 1
        row = dict(K=steps, fit_runs=runs, fit_rmse=fit["rmse"], best_same_runs=rmse(best[runs, -1]))
        row["binary_digits"] = _rmse(x, x.exp(), *_initial(steps, *PAPER_RANGE))[0]
        if steps <= args.largest:
            row.update(count=rmse(best[2**steps, -1]), one_split=rmse(one_split_bound(best, steps, spacing)))
        rows.append(row)
    print(f"runs needed for RMSE {PAPER_RMSE}: {least_runs}\n")
    print("| K | count bound | one-split bound | fit: runs | fit: RMSE | best, as many runs | x binary |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        bounds = f"{r['count']:.5f} | {r['one_split']:.5f}" if "count" in r else "- | -"
        fit = f"{r['fit_runs']} | {r['fit_rmse']:.4f} | {r['best_same_runs']:.4f}"
        print(f"| {r['K']} | {bounds} | {fit} | {r['binary_digits']:.4f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = platform.processor() or platform.machine()
    args.out.write_text(json.dumps(dict(machine=machine, least_runs=least_runs, rows=rows), indent=1))


if __name__ == "__main__":
    main()
