"""Fitting SI-exp's parameters T, h, d to exp (``python -m transpike.sit fit``).

Least squares gives the output weights d exactly for given spike trains. T and h come from four
searches: Adam through the FS-neuron surrogate gradient (local, from structured and random starts),
one step inserted into the fit for K - 1 steps (a grid), differential evolution on the exact loss
(global), and seeded cascade-shaped draws, each refined by a pattern search on the exact loss; the
best wins. Past K = 16 (``--longer``, K = 20, 24, 28, 32) the global search is left out: its cost
grows as K², and the cascade-shaped draws alone find these fits. Everything is seeded, so the
shipped ``data/si_exp.json`` is reproduced by the same command.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import multiprocessing
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import differential_evolution
from torch import Tensor

from . import FIT_POINTS, PAPER_RANGE, SHIFTED_RANGE, _SurrogateSpike, fs_neuron, fs_spikes, shipped_fits

RANGES = {"paper": PAPER_RANGE, "shifted": SHIFTED_RANGE}
SEARCHED_STEPS = (4, 16)  # the shipped K fitted with every search, one K after the other
# past K = 16 every fourth K: one step more lowers the error by a few percent there (BENCHMARKS §5),
# and each fit takes minutes
LONGER_STEPS = (20, 24, 28, 32)


def _least_squares_weights(x: Tensor, y: Tensor, threshold: Tensor, reset: Tensor) -> Tensor:
    """The output weights d minimizing Σ (Σ_t d(t)·z(t) - y)² for the spike trains that T, h give."""
    spikes = fs_spikes(x, threshold, reset)
    return torch.linalg.lstsq(spikes, y.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)


def _rmse(x: Tensor, y: Tensor, threshold: Tensor, reset: Tensor) -> tuple[float, Tensor]:
    weight = _least_squares_weights(x, y, threshold, reset)
    return (fs_neuron(x, threshold, reset, weight) - y).square().mean().sqrt().item(), weight


def exact_rmse(params: np.ndarray, x: Tensor, y: Tensor, yy: float) -> float:
    """RMSE of the least-squares output weights for the spike trains of (T, h) = ``params``.

    From the normal equations (G = ZᵀZ, b = Zᵀy, G·d = b): Σ(Z·d - y)² = yᵀy - bᵀd, so the K×K
    system is all that is solved; ``yy`` is yᵀy. About half the cost of a least-squares solve on
    the 10 000 × K spike matrix, which matters for a search that evaluates it 10^5 times.
    """
    steps = params.shape[0] // 2
    p = torch.from_numpy(params)
    spikes = fs_spikes(x, p[:steps], p[steps:])
    gram, moment = spikes.T @ spikes, spikes.T @ y
    weight = torch.linalg.lstsq(gram, moment.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)
    return max(yy - (moment @ weight).item(), 0.0) ** 0.5 / x.numel() ** 0.5


def evolve(
    x: Tensor,
    y: Tensor,
    steps: int,
    seed: int,
    generations: int,
    population: int,
    start: Tensor | None = None,
) -> Tensor:
    """A global search for (T, h): differential evolution (scipy, seeded) on :func:`exact_rmse`.

    The surrogate gradient only sees spikes near their thresholds, so Adam stops in a local
    optimum; a population search over the whole box (T within the range widened by 10 %, h up to
    1.1 times its width) finds better ones (``benchmarks/si_exp_search.py``). ``start`` ([2K]: T
    then h, clipped into the box) joins the initial population, e.g. the fit for K - 1 steps with a
    silent step appended; scipy's default strategy then mutates around it while it is the best.

    Returns:
        [2K] tensor: T then h.
    """
    lo, hi = x.min().item(), x.max().item()
    span = hi - lo
    bounds = [(lo - 0.1 * span, hi + 0.1 * span)] * steps + [(0.0, 1.1 * span)] * steps
    if start is not None:
        start = np.clip(start.numpy(), *np.array(bounds).T)
    result = differential_evolution(
        exact_rmse,
        bounds,
        args=(x, y, (y @ y).item()),
        seed=seed,
        maxiter=generations,
        popsize=population,
        mutation=(0.5, 1.0),
        recombination=0.9,
        init="sobol",
        tol=0,
        polish=False,
        x0=start,
    )
    return torch.from_numpy(result.x)


def _initial(steps: int, lo: float, hi: float) -> tuple[Tensor, Tensor]:
    """A successive-approximation start: step 1 always fires (the output's floor), steps 2..K
    compare x with lo + span/2^(t-1) and subtract that span when they fire (x's binary digits)."""
    span = (hi - lo) / 2.0 ** torch.arange(1, steps, dtype=torch.float64)
    threshold = torch.cat([torch.tensor([lo - 1.0], dtype=torch.float64), lo + span])
    reset = torch.cat([torch.zeros(1, dtype=torch.float64), span])
    return threshold, reset


def with_silent_steps(previous: dict, hi: float, steps: int) -> tuple[Tensor, Tensor]:
    """(T, h) of a shorter fit with steps appended that never fire (T above the range's top ``hi``,
    h = 0) up to ``steps``: the same function as the shorter fit, the warm start of a longer one."""
    silent = steps - len(previous["T"])
    threshold = torch.tensor([*previous["T"], *[hi + 1.0] * silent], dtype=torch.float64)
    return threshold, torch.tensor([*previous["h"], *[0.0] * silent], dtype=torch.float64)


def insertions(x: Tensor, y: Tensor, previous: dict, keep: int = 5) -> list[tuple[Tensor, Tensor]]:
    """The ``keep`` best (T, h) made by inserting one step anywhere into the fit for K - 1 steps,
    its threshold and reset from a grid (64 × 32 over the range, resets of either sign), by the
    exact loss with least-squares d.

    Appending a silent step keeps the K - 1 fit's function, and neither search moves far from it:
    the shipped fits for K = 10..14 on [-12, 0] were within 0.5 % of each other before this
    candidate (stop 21, BENCHMARKS §5). A step inserted early changes the spikes of every later
    step at once, which a coordinate move or a mutation rarely finds. The grid holds a silent step
    (a threshold above the range), so with resets ≥ 0 the best never fits worse than K - 1 steps.
    """
    lo, hi = x[0].item(), x[-1].item()
    span = hi - lo
    threshold, reset = np.array(previous["T"]), np.array(previous["h"])
    grid = itertools.product(
        range(threshold.shape[0] + 1),
        np.linspace(lo - 0.5 * span, hi + 0.1 * span, 64),
        np.linspace(-0.5 * span, span, 32),
    )
    params = (np.concatenate([np.insert(threshold, at, t), np.insert(reset, at, h)]) for at, t, h in grid)
    return _best(params, x, y, keep)


def _best(params: Iterable[np.ndarray], x: Tensor, y: Tensor, keep: int) -> list[tuple[Tensor, Tensor]]:
    """The ``keep`` best of ``params`` ([2K]: T then h) by :func:`exact_rmse`, best first, as (T, h)."""
    yy = (y @ y).item()
    best = heapq.nsmallest(keep, params, key=lambda p: exact_rmse(p, x, y, yy))
    return [(torch.from_numpy(p[: p.size // 2]), torch.from_numpy(p[p.size // 2 :])) for p in best]


def cascades(
    x: Tensor, y: Tensor, steps: int, seed: int, draws: int, keep: int = 8
) -> list[tuple[Tensor, Tensor]]:
    """The ``keep`` best of ``draws`` seeded cascade-shaped (T, h), by the exact loss.

    The shape the fits found from K = 8 on (BENCHMARKS §5): thresholds descending from near the
    range's top, their spacing growing geometrically (ratio 1 to 1.5, 1 is even spacing) and
    together covering 30-110 % of the range, each reset 0.8-2 times its step's spacing. Drawn
    whole, such a start puts every step where exp needs it at once; the other searches reach that
    only step by step. On [-12, 0], where exp's slope spans five orders of magnitude and the
    spacing must grow, the fits for K ≥ 10 without this candidate were 14-42 % worse (stop 22).
    """
    lo, hi = x[0].item(), x[-1].item()
    span = hi - lo
    rng = np.random.default_rng([seed, steps])

    def draw() -> np.ndarray:
        growth = rng.uniform(1.0, 1.5) ** np.arange(steps)
        spacing = span * rng.uniform(0.3, 1.1) * growth / growth.sum()
        first = hi - span * rng.uniform(-0.05, 0.6)
        threshold = first - np.cumsum(spacing) + spacing * rng.normal(0.0, 0.3, steps)
        return np.concatenate([threshold, spacing * rng.uniform(0.8, 2.0, steps)])

    return _best((draw() for _ in range(draws)), x, y, keep)


def fit_si_exp(
    steps: int,
    lo: float,
    hi: float,
    seed: int = 0,
    restarts: int = 3,
    iterations: int = 800,
    previous: dict | None = None,
    generations: int = 0,
    population: int = 10,
    cascade_draws: int = 0,
) -> dict:
    """Fit SI-exp's T, h, d to exp on ``FIT_POINTS`` evenly spaced points of [lo, hi].

    Starts: :func:`_initial`; a fit for fewer steps (``previous``) with silent steps appended, so
    a longer neuron never fits worse than a shorter one; and random T, h (seeded). Each trains
    T, h with Adam through the surrogate gradient while d is re-solved by least squares (exact for
    fixed spike trains). When ``previous`` has K - 1 steps, :func:`insertions` adds it with one
    step inserted. With ``generations`` > 0, :func:`evolve` adds the best point of a global search, and
    with ``previous`` that of a second one seeded with the K - 1 fit. With ``cascade_draws`` > 0,
    :func:`cascades` adds the best cascade-shaped draws. Every candidate is refined by
    a pattern search on the exact loss; the best wins. The same arguments give the same parameters.
    """
    x = torch.linspace(lo, hi, FIT_POINTS, dtype=torch.float64)
    y = torch.exp(x)
    gen = torch.Generator().manual_seed(seed)
    starts = [_initial(steps, lo, hi)]
    if previous is not None:
        starts.append(with_silent_steps(previous, hi, steps))
    decay = 2.0 ** -torch.arange(steps, dtype=torch.float64)
    for _ in range(restarts - 1):
        threshold = lo + (hi - lo) * torch.rand(steps, generator=gen, dtype=torch.float64)
        starts.append((threshold, (hi - lo) * decay * torch.rand(steps, generator=gen, dtype=torch.float64)))
    candidates = [_adam(x, y, threshold, reset, iterations) for threshold, reset in starts]
    if previous is not None and len(previous["T"]) == steps - 1:
        candidates += insertions(x, y, previous)
    if cascade_draws > 0:
        candidates += cascades(x, y, steps, seed, cascade_draws)
    if generations > 0:
        # a second search whose population holds the K - 1 fit escapes the plateau the first
        # (a Sobol population alone) stalls on for the shifted range (BENCHMARKS §5)
        for start in [None] if previous is None else [None, torch.cat(starts[1])]:
            found = evolve(x, y, steps, seed, generations, population, start)
            candidates.append((found[:steps], found[steps:]))
    best: tuple[float, Tensor, Tensor, Tensor] | None = None
    for threshold, reset in candidates:
        threshold, reset = _pattern_search(x, y, threshold, reset)
        rmse, weight = _rmse(x, y, threshold, reset)
        if best is None or rmse < best[0]:
            best = (rmse, threshold, reset, weight)
    rmse, threshold, reset, weight = best
    return dict(
        K=steps,
        range=[lo, hi],
        seed=seed,
        generations=generations,
        rmse=rmse,
        T=threshold.tolist(),
        h=reset.tolist(),
        d=weight.tolist(),
    )


def _adam(x: Tensor, y: Tensor, threshold: Tensor, reset: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
    threshold, reset = threshold.clone().requires_grad_(), reset.clone().requires_grad_()
    optimizer = torch.optim.Adam([threshold, reset], lr=1e-2 * (x.max() - x.min()).item() / 2)
    best = (math.inf, threshold.detach().clone(), reset.detach().clone())
    for step in range(iterations):
        with torch.no_grad():
            weight = _least_squares_weights(x, y, threshold, reset)
        loss = (fs_neuron(x, threshold, reset, weight, _SurrogateSpike.apply) - y).square().mean()
        if loss.item() < best[0]:
            best = (loss.item(), threshold.detach().clone(), reset.detach().clone())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == iterations // 2:
            for group in optimizer.param_groups:
                group["lr"] /= 10
    return best[1], best[2]


def _pattern_search(
    x: Tensor, y: Tensor, threshold: Tensor, reset: Tensor, evaluations: int = 1500
) -> tuple[Tensor, Tensor]:
    """Coordinate moves of ±δ on T and h, kept when the exact loss falls; δ halves when none do."""
    params = torch.cat([threshold, reset])
    steps = threshold.shape[0]
    loss = _rmse(x, y, params[:steps], params[steps:])[0]
    delta = 0.05 * (x.max() - x.min()).item() / steps
    while delta > 1e-5 and evaluations > 0:
        improved = False
        for index in range(params.shape[0]):
            evaluations -= 2
            for sign in (1.0, -1.0):
                trial = params.clone()
                trial[index] += sign * delta
                trial_loss = _rmse(x, y, trial[:steps], trial[steps:])[0]
                if trial_loss < loss:
                    params, loss, improved = trial, trial_loss, True
                    break
        if not improved:
            delta /= 2
    return params[:steps], params[steps:]


def _fit_range(
    key: str,
    first: int,
    last: int,
    longer: list[int],
    seed: int,
    restarts: int,
    generations: int,
    cascade_draws: int,
) -> list[dict]:
    """The fits for K = first..last and then ``longer`` on one range, each warm-started from the one
    before (the first from the shipped fit for K = first - 1, if there is one, so that a part of
    the table is refitted as the whole table would be); the global search only runs up to ``last``."""
    # one thread: small tensors gain nothing from more, and a fixed summation order keeps the
    # search's path, hence the file, the same from run to run whatever the machine's core count
    torch.set_num_threads(1)
    lo, hi = RANGES[key]
    previous = shipped_fits(key == "shifted").get(first - 1)
    fits: list[dict] = []
    for steps in [*range(first, last + 1), *longer]:
        start = time.perf_counter()
        # differential evolution's cost grows as K² (population and neuron both grow with K): by
        # that growth its two searches would add about an hour per range for K = 20..32, while the
        # cascades alone find the long fits' shape (BENCHMARKS §5)
        searched = generations if steps <= last else 0
        settings = dict(previous=previous, generations=searched, cascade_draws=cascade_draws)
        previous = fit_si_exp(steps, lo, hi, seed, restarts, **settings)
        fits.append(previous)
        print(
            f"{key} K={steps}: RMSE {fits[-1]['rmse']:.3g} ({time.perf_counter() - start:.0f} s)", flush=True
        )
    return fits


def main(argv: list[str] | None = None) -> None:
    """``python -m transpike.sit fit [--steps 4 16] [--longer 20 24 28 32] [--seed 0] [--generations 150]
    [--cascade-draws 10000] [--out FILE]``"""
    parser = argparse.ArgumentParser(prog="python -m transpike.sit", description="fit SI-exp parameters")
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="fit SI-exp for a range of K on [-1, 1] and on [-12, 0]")
    fit.add_argument("--steps", type=int, nargs=2, default=list(SEARCHED_STEPS), metavar=("FIRST", "LAST"))
    fit.add_argument(
        "--longer",
        type=int,
        nargs="*",
        metavar="K",
        help="longer neurons fitted after LAST without the global search (default: 20 24 28 32 when "
        "LAST is 16, as in the shipped table; else none)",
    )
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--restarts", type=int, default=2)
    fit.add_argument(
        "--generations", type=int, default=150, help="of the global search (0: Adam and pattern search only)"
    )
    fit.add_argument(
        "--cascade-draws", type=int, default=10_000, help="cascade-shaped starts drawn (0: none)"
    )
    fit.add_argument("--out", type=Path, default=Path("si_exp.json"))
    args = parser.parse_args(argv)
    first, last = args.steps
    if args.longer is None:  # a shorter run, e.g. to check a few entries, stops at its LAST
        args.longer = list(LONGER_STEPS) if last == SEARCHED_STEPS[1] else []
    chain = [last, *args.longer]
    if not 1 <= first <= last or chain != sorted(set(chain)):
        parser.error(f"--steps {first} {last} --longer {args.longer}: K must be >= 1 and increasing")
    # the two ranges are independent: one process each, started afresh, since a forked child of a
    # process that has run autograd (a test session, a notebook) cannot run it again
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(RANGES), mp_context=spawn) as pool:
        jobs = {
            key: pool.submit(
                _fit_range,
                key,
                first,
                last,
                args.longer,
                args.seed,
                args.restarts,
                args.generations,
                args.cascade_draws,
            )
            for key in RANGES
        }
        table = {"version": 1, "points": FIT_POINTS, **{key: job.result() for key, job in jobs.items()}}
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {args.out}")
