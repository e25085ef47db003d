"""How far the shipped SI-exp fit is from a longer global search over the same neuron.

For each K, the fit's differential evolution (``transpike.sit.fit.evolve``: scipy, seeded, on the
exact loss with the package's own spike dynamics and least-squares output weights) runs with a
larger budget than ``python -m transpike.sit fit`` gives it, then the fit's pattern search.
Reported: RMSE on 10 000 evenly spaced points of the fit's range ([-1, 1], the paper's, or
[-12, 0], the shifted softmax's default) of the shipped fit and of the search. ``--warm`` puts the
shipped fit for K - 1 steps, with a silent step appended (the fit's warm start), into the search's
initial population.

    python benchmarks/si_exp_search.py [--steps 4 8 12] [--fit paper|shifted] [--generations 400]
        [--population 20] [--warm]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from transpike.sit import FIT_POINTS, PAPER_RANGE, SHIFTED_RANGE, fitted_parameters
from transpike.sit.fit import _pattern_search, _rmse, evolve, with_silent_steps


def search(steps: int, shifted: bool, generations: int, population: int, seed: int, warm: bool) -> dict:
    lo, hi = SHIFTED_RANGE if shifted else PAPER_RANGE
    x = torch.linspace(lo, hi, FIT_POINTS, dtype=torch.float64)
    y = x.exp()
    start = time.perf_counter()
    initial = None
    if warm:  # the shipped K - 1 fit, as the fit's own warm start
        initial = torch.cat(with_silent_steps(fitted_parameters(steps - 1, shifted=shifted), hi, steps))
    best = evolve(x, y, steps, seed, generations, population, initial)
    threshold, reset = _pattern_search(x, y, best[:steps], best[steps:])
    return {
        "K": steps,
        "range": [lo, hi],
        "shipped_rmse": fitted_parameters(steps, shifted=shifted)["rmse"],
        "search_rmse": _rmse(x, y, threshold, reset)[0],
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 12])
    parser.add_argument("--fit", choices=["paper", "shifted"], default="paper")
    parser.add_argument("--generations", type=int, default=400)
    parser.add_argument("--population", type=int, default=20, help="scipy's popsize (per parameter)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm", action="store_true", help="seed the search with the K - 1 fit")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: benchmarks/out/si_exp_search-FIT.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # one small problem at a time: threads only add overhead
    rows = []
    for steps in args.steps:
        setting = (args.generations, args.population, args.seed, args.warm)
        rows.append(search(steps, args.fit == "shifted", *setting))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| K | shipped fit RMSE | search RMSE | search / shipped | time |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['K']} | {r['shipped_rmse']:.4f} | {r['search_rmse']:.4f} | "
            f"{r['search_rmse'] / r['shipped_rmse']:.2f} | {r['seconds']:.0f} s |"
        )
    out = args.out or Path(f"benchmarks/out/si_exp_search-{args.fit}{'-warm' if args.warm else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = platform.processor() or platform.machine()
    settings = dict(generations=args.generations, population=args.population, warm=args.warm)
    out.write_text(json.dumps({"machine": machine, **settings, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
