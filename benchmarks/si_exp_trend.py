"""How SI-exp's best RMSE falls with K, past K = 16: how many steps the paper's figure
would need by the trend.

The searches of ``python -m transpike.sit fit`` grow costly with K (differential evolution over 2K
parameters), so this one uses only the fit's cheapest, ``transpike.sit.fit.cascades``: seeded draws
of the shape the fits take from K = 8 on (thresholds descending in steps that grow geometrically,
resets in proportion). ``--samples`` draws are scored by the exact loss (least-squares d); the
``--refine`` best go to the fit's pattern search. Reported per K: RMSE on 10 000 evenly spaced
points of [-1, 1] and the runs of equal output on them (the paper's figure needs 418,
``si_exp_bound.py``), the shipped fit's RMSE where there is one, and a power law RMSE = a·K^-α
fitted (least squares in log-log) to the search's figures for K ≥ 12, with the K at which it
reaches the paper's 0.0015413. A search gives an upper bound on the best RMSE, not the best: the
law says where these fits are heading, not where the neuron's limit is (``si_exp_bound.py`` gives
lower bounds).

    python benchmarks/si_exp_trend.py [--steps 8 12 16 20 24 32] [--samples 20000] [--refine 16]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from transpike.sit import FIT_POINTS, PAPER_RANGE, fs_neuron, shipped_fits
from transpike.sit.fit import _pattern_search, _rmse, cascades

PAPER_RMSE = 0.0015413


def search(steps: int, samples: int, refine: int, seed: int) -> dict:
    torch.set_num_threads(1)  # one small problem per process: threads only add overhead
    lo, hi = PAPER_RANGE
    x = torch.linspace(lo, hi, FIT_POINTS, dtype=torch.float64)
    y = x.exp()
    start = time.perf_counter()
    refined = [_pattern_search(x, y, *pair) for pair in cascades(x, y, steps, seed, samples, refine)]
    threshold, reset = min(refined, key=lambda pair: _rmse(x, y, *pair)[0])
    rmse, weight = _rmse(x, y, threshold, reset)
    output = fs_neuron(x, threshold, reset, weight)
    shipped = shipped_fits(shifted=False).get(steps, {}).get("rmse")
    return {
        "K": steps,
        "search_rmse": rmse,
        "runs": int((output.diff() != 0).sum()) + 1,
        "shipped_rmse": shipped,
        "seconds": time.perf_counter() - start,
    }


def power_law(rows: list[dict]) -> tuple[float, float]:
    """(α, K*) of RMSE = a·K^-α fitted to the rows with K ≥ 12, K* where it meets the paper's."""
    fitted = [r for r in rows if r["K"] >= 12]
    log_k = np.log([r["K"] for r in fitted])
    log_rmse = np.log([r["search_rmse"] for r in fitted])
    slope, intercept = np.polyfit(log_k, log_rmse, 1)
    return -slope, math.exp((math.log(PAPER_RMSE) - intercept) / slope)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 12, 16, 20, 24, 32])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--refine", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/si_exp_trend.json"))
    args = parser.parse_args()
    if sum(k >= 12 for k in args.steps) < 2:
        parser.error(f"--steps {args.steps}: the power law needs at least two K >= 12")
    # one K per process; the largest first so the two cores finish together
    steps = sorted(args.steps, reverse=True)
    with ProcessPoolExecutor(max_workers=2) as pool:
        jobs = [pool.submit(search, k, args.samples, args.refine, args.seed) for k in steps]
        rows = sorted((job.result() for job in jobs), key=lambda r: r["K"])
    print("| K | search RMSE | its runs | shipped fit RMSE | search / shipped | time |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        shipped = r["shipped_rmse"]
        ratio = f"{r['search_rmse'] / shipped:.2f}" if shipped else "-"
        print(
            f"| {r['K']} | {r['search_rmse']:.4f} | {r['runs']} | {f'{shipped:.4f}' if shipped else '-'} | "
            f"{ratio} | {r['seconds']:.0f} s |"
        )
    alpha, reach = power_law(rows)
    print(f"\nRMSE ∝ K^-{alpha:.2f} (K ≥ 12); the paper's {PAPER_RMSE} at K ≈ {reach:.0f} by this law")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = platform.processor() or platform.machine()
    settings = dict(samples=args.samples, refine=args.refine, seed=args.seed)
    out = {"machine": machine, **settings, "alpha": alpha, "paper_reached_at_K": reach, "rows": rows}
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
