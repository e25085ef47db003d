"""How far the shipped SI-exp fit is from a global search over the same neuron.

For each K, differential evolution (scipy, seeded) searches the thresholds T and resets h of the
SI-exp neuron directly on the exact loss (no surrogate gradient): the spike trains come from the
package's own dynamics (``transpike.sit.fs_spikes``), the output weights d from least squares, as in
``python -m transpike.sit fit``; the best point is then refined by the fit's pattern search.
Reported: RMSE on the paper's 10 000 points of [-1, 1] of the shipped fit and of the search.

    python benchmarks/si_exp_search.py [--steps 4 8 12] [--generations 400] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import differential_evolution

from transpike.sit import FIT_POINTS, PAPER_RANGE, fitted_parameters, fs_spikes
from transpike.sit.fit import _pattern_search, _rmse


def exact_rmse(params: np.ndarray, x: torch.Tensor, y: torch.Tensor, yy: float) -> float:
    """RMSE of the least-squares output weights for the spike trains of (T, h) = params.

    From the normal equations: with G = ZᵀZ, b = Zᵀy and G·d = b, Σ(Z·d - y)² = yᵀy - bᵀd.
    """
    steps = params.shape[0] // 2
    p = torch.from_numpy(params)
    spikes = fs_spikes(x, p[:steps], p[steps:])
    gram, moment = spikes.T @ spikes, spikes.T @ y
    weight = torch.linalg.lstsq(gram, moment.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)
    return max(yy - (moment @ weight).item(), 0.0) ** 0.5 / FIT_POINTS**0.5


def search(steps: int, generations: int, seed: int) -> dict:
    lo, hi = PAPER_RANGE
    x = torch.linspace(lo, hi, FIT_POINTS, dtype=torch.float64)
    y = x.exp()
    span = hi - lo
    bounds = [(lo - 0.1 * span, hi + 0.1 * span)] * steps + [(0.0, 1.1 * span)] * steps
    start = time.perf_counter()
    result = differential_evolution(
        exact_rmse,
        bounds,
        args=(x, y, (y @ y).item()),
        seed=seed,
        maxiter=generations,
        popsize=20,
        mutation=(0.5, 1.0),
        recombination=0.9,
        init="sobol",
        tol=0,
        polish=False,
    )
    best = torch.from_numpy(result.x)
    threshold, reset = _pattern_search(x, y, best[:steps], best[steps:])
    return {
        "K": steps,
        "shipped_rmse": fitted_parameters(steps, shifted=False)["rmse"],
        "search_rmse": _rmse(x, y, threshold, reset)[0],
        "evaluations": int(result.nfev),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 12])
    parser.add_argument("--generations", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/si_exp_search.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # one small problem at a time: threads only add overhead
    rows = []
    for steps in args.steps:
        rows.append(search(steps, args.generations, args.seed))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| K | shipped fit RMSE | global search RMSE | search / shipped | evaluations | time |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['K']} | {r['shipped_rmse']:.4f} | {r['search_rmse']:.4f} | "
            f"{r['search_rmse'] / r['shipped_rmse']:.2f} | {r['evaluations']} | {r['seconds']:.0f} s |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = platform.processor() or platform.machine()
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
