"""Accuracy of the ANN and of the SNN after every t ≤ T, in one process or sharded over many.

Under ``torchrun`` (WORLD_SIZE > 1) every process evaluates the samples ``rank, rank + world, ...``
(each sample exactly once), the correct counts are summed with ``all_reduce``, and every rank ends
with the same totals; only rank 0 writes files.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from .data import UNLABELLED, spread
from .energy import E_AC, E_FLOAT, E_MAC, check_costs, count_dense_work, energy_report
from .exits import EXITS, SCORES, ExitRule, check_rules, exit_counts, exit_table
from .fingerprints import WithFingerprints
from .model import SpikingModel
from .progress import Progress
from .scores import agreement, correct, disagreements, matches_from, paired_interval, top1_among
from .spikes import SpikeMonitor
from .trace import analog_network


@dataclass(frozen=True)
class World:
    """This process's place among the evaluation processes."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for in one)."""
        if self.size > 1:
            dist.barrier()


def init_world(device: str) -> World:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); a single process otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def evaluate(
    snn: SpikingModel,
    ann: nn.Module,
    dataset: Dataset,
    time_steps: int,
    batch_size: int = 64,
    limit: int | None = None,
    device: str = "cpu",
    world: World | None = None,
    progress: bool = True,
    energy: bool = True,
    e_mac: float = E_MAC,
    e_ac: float = E_AC,
    e_float: float = E_FLOAT,
    store: Progress | None = None,
    workers: int = 0,
    exits: Sequence[ExitRule | float] = EXITS,
    predictions: bool = False,
    against_ann: bool = False,
) -> dict:
    """Top-1 accuracy (percent) of the ANN and of the SNN after each t = 1..T, and what it cost.

    ``against_ann``: score against the ANN's top-1 class instead of the labels, which are then not
    read (data without labels, :data:`~transpike.data.UNLABELLED`, needs it): the ANN's top-1 is
    100 % and the SNN's is the share of samples it decides as the ANN does, with every interval,
    early-exit row and per-class figure read the same way.

    ``limit``: evaluate that many samples, spread evenly over the data
    (:func:`~transpike.data.spread`: every class of data stored class by class gets its share).
    ``workers`` processes read and preprocess the samples (0: this process). ``exits``: the
    early-exit rules (:mod:`transpike.exits`; a bare number is a confidence threshold), read from
    the same run (none: no early-exit rows). ``predictions``: also return every sample's label and
    top-1 classes, to compare evaluations sample by sample (:mod:`transpike.compare`). ``e_mac``,
    ``e_ac``, ``e_float``: pJ per operation, as for :func:`~transpike.energy.account`. Where the
    network kept its calibration samples' fingerprints, the evaluated samples among them are
    counted, with a warning (on the main process) when there are any (:mod:`transpike.fingerprints`).
    With ``store``, the running totals are saved as the evaluation goes (and when it stops on an
    exception), and a resumed evaluation continues from the saved ones (:mod:`transpike.progress`).

    Returns:
        dict with ``num_samples``, ``ann_top1``, ``snn_top1`` (list, index t-1 = after t steps),
        ``ann_top5``, ``snn_top5`` (the same for top-5), ``difference_ci95`` (per t, the half-width
        of the 95 % interval of SNN top-1 - ANN top-1, :func:`paired_interval`), ``agreement``
        (per t, the percentage of samples whose SNN top-1 is the ANN's top-1, right or wrong),
        ``scored_against`` ("labels" or "ann"), where the synapses are rounded (``weight_bits``)
        ``rounded_ann_top1`` (the top-1 of the ANN holding the rounded weights, which the SNN
        converges to: SNN - ANN is the rounding's part plus the conversion's),
        ``matches_ann_from`` (the first t from which every interval holds 0, or None:
        :func:`~transpike.scores.matches_from`), ``early_exit``
        (one row per rule, :func:`~transpike.exits.exit_table`), ``resumed_samples`` (those
        counted before this run, from ``store``), ``calibration_samples`` (how many of the samples
        were calibration samples; None where the network does not know its own; where some but not
        all were and with ``predictions``, ``kept_apart``: the top-1 on the others alone,
        :func:`~transpike.scores.top1_among`), with ``energy``
        the :class:`~transpike.energy.EnergyReport` of all samples as ``energy`` and, with
        ``predictions``, ``predictions``: int32 tensors ``labels`` [N], ``ann`` [N] (the ANN's top-1
        class), ``snn`` [N, T] (the SNN's after t = 1..T), ``index`` [N] (the dataset's sample
        each row is: 0..N-1 without ``limit``) and where known ``calibration`` [N] (1: a
        calibration sample).
    """
    world = world or World()
    check_costs(dict(e_mac=e_mac, e_ac=e_ac, e_float=e_float))
    indices = spread(len(dataset), limit)
    total, dataset = len(indices), Subset(dataset, indices)
    if total == 0:
        raise ValueError("the evaluation data is empty")
    snn.to(device)
    ann.to(device).eval()
    # counts: samples; ANN top-1 and top-5 correct; SNN top-1 correct after t = 1..T, then top-5;
    # the samples only the ANN, then only the SNN gets right (top-1) after t = 1..T; those whose SNN
    # top-1 is the ANN's after t = 1..T; then per
    # early-exit rule, the samples exiting after t = 1..T, those right at their exit (top-1,
    # top-5), those only the ANN, then only the SNN gets right, and those agreeing with the ANN; then
    # the calibration samples met; last the top-1 correct of the ANN holding the rounded synapses
    exits = check_rules(exits)
    width = 3 + 5 * time_steps
    counts = torch.zeros(width + len(exits) * (time_steps + SCORES) + 2, dtype=torch.float64, device=device)
    # with rounded synapses, the ANN they make (made before the monitor hooks the network's modules)
    rounded = analog_network(snn.network) if snn.options.get("weight_bits") is not None else None
    known = snn.calibration_fingerprints
    # Dense work is the same for every sample: count it on one sample, before spikes are monitored.
    dense = count_dense_work(snn, dataset[0][0].unsqueeze(0).to(device)) if energy else None
    shard = range(world.rank, total, world.size)
    # this process's samples: label, ANN top-1, SNN top-1 after t = 1..T, whether a calibration
    # sample (rows past `done` unused)
    chosen = torch.zeros(len(shard) if predictions else 0, 3 + time_steps, dtype=torch.int32, device=device)
    with torch.inference_mode(), SpikeMonitor(snn) if energy else nullcontext() as monitor:

        def totals(done: int) -> dict[str, Tensor]:
            return dict(
                counts=counts.clone(),
                done=torch.tensor(done),
                **(dict(predictions=chosen) if predictions else {}),  # rows from `done` on are ignored
                **(monitor.state(time_steps) if monitor else {}),
            )

        key = saved = None
        if store:  # what a resumed evaluation must share with the interrupted one
            key = dict(network=snn.digest(), samples=total, time_steps=time_steps, processes=world.size,
                       energy=energy, exit_rules=[[r.kind, r.value] for r in exits],
                       predictions=predictions, against_ann=against_ann)  # fmt: skip
            saved = store.restore(key, world.rank)
        if saved is not None:
            counts.copy_(saved["counts"])
            if predictions:
                chosen.copy_(saved["predictions"])
            if monitor:
                monitor.load_state({name: saved[name].to(device) for name in ("sums", "maxima")}, time_steps)
        done = resumed = 0 if saved is None else int(saved["done"])
        last = totals(done) if store else None  # the totals of the last whole batch
        source = dataset if known is None else WithFingerprints(dataset)
        loader = DataLoader(Subset(source, shard[done:]), batch_size, num_workers=workers,
                            pin_memory=device.startswith("cuda"))  # fmt: skip
        bar = tqdm(total=len(shard), initial=done, desc="evaluate", unit="img",
                   disable=not (progress and world.is_main))  # fmt: skip
        try:
            for x, y, *prints in loader:  # prints: [the batch's fingerprints] where known is not None
                calibrated = torch.isin(prints[0], known) if prints else torch.zeros(len(y), dtype=torch.bool)
                if not against_ann and bool((y == UNLABELLED).any()):
                    raise ValueError("the evaluation data has samples without labels: score them against the "
                                     "ANN's top-1 (against_ann=True, --against-ann)")  # fmt: skip
                x, y, calibrated = x.to(device), y.to(device), calibrated.to(device)
                counts[0] += len(y)
                logits, outputs = ann(x), snn.simulate(x, time_steps)
                y = logits.argmax(-1) if against_ann else y
                counts[1:3] += correct(logits, y)
                counts[3:width] += torch.cat(
                    [correct(outputs, y), disagreements(logits, outputs, y), agreement(logits, outputs)[None]]
                ).flatten()
                counts[width:-2] += exit_counts(outputs, y, exits, logits).flatten()
                counts[-2] += calibrated.sum()
                if rounded is not None:
                    counts[-1] += correct(rounded(x), y)[0]
                if predictions:
                    chosen[done : done + len(y)] = torch.cat(
                        [y[:, None], logits.argmax(-1)[:, None], outputs.argmax(-1).T, calibrated[:, None]], 1
                    ).to(torch.int32)
                done += len(y)
                if store:
                    last = totals(done)
                    store.save(key, world.rank, last)
                bar.update(len(y))
        finally:  # finished or not, keep the last whole batch's totals (a resumed sweep skips a finished K)
            bar.close()
            if store:
                store.save(key, world.rank, last, now=True)
    counts = torch.cat([counts, counts.new_tensor([resumed])])  # summed over processes with the counts
    if world.size > 1:
        dist.all_reduce(counts)
        if monitor is not None:
            monitor.all_reduce(time_steps)
    counts, resumed = counts[:-1].cpu(), int(counts[-1])
    samples = int(counts[0])
    percent = (100.0 * counts / samples).tolist()
    results = dict(
        num_samples=samples,
        ann_top1=percent[1],
        snn_top1=percent[3 : 3 + time_steps],
        ann_top5=percent[2],
        snn_top5=percent[3 + time_steps : 3 + 2 * time_steps],
        difference_ci95=paired_interval(
            *counts[3 + 2 * time_steps : width - time_steps].view(2, -1), samples
        ).tolist(),
        agreement=percent[width - time_steps : width],
        resumed_samples=resumed,
        scored_against="ann" if against_ann else "labels",
        calibration_samples=int(counts[-2]) if known is not None else None,
    )
    if rounded is not None:
        results["rounded_ann_top1"] = percent[-1]
    if results["calibration_samples"] and world.is_main:  # once, not once per process
        warnings.warn(
            f"{results['calibration_samples']} of the {samples} evaluated samples were calibration samples: "
            "the thresholds were fitted on them, so the SNN is not scored on unseen data alone; keep "
            "calibration and evaluation data apart",
            UserWarning,
            stacklevel=2,
        )
    differences = [top1 - results["ann_top1"] for top1 in results["snn_top1"]]
    results["matches_ann_from"] = matches_from(differences, results["difference_ci95"])
    if monitor is not None:
        results["energy"] = energy_report(monitor, dense, samples, time_steps, e_mac, e_ac, e_float)
    if exits:
        ratio = results["energy"].ratio if monitor is not None else dict(ecmt=None, full=None)
        table = counts[width:-2].view(len(exits), -1)
        results["early_exit"] = exit_table(table, exits, ratio["ecmt"], ratio["full"])
    if predictions:
        rows = gather_samples(chosen, total, world).cpu()
        index = torch.tensor(indices, dtype=torch.int32)
        results["predictions"] = dict(labels=rows[:, 0], ann=rows[:, 1], snn=rows[:, 2:-1], index=index)
        if known is not None:
            results["predictions"]["calibration"] = rows[:, -1]
            if 0 < results["calibration_samples"] < samples:  # the figures without them, beside
                results["kept_apart"] = top1_among(rows[:, 0], rows[:, 1], rows[:, 2:-1], rows[:, -1] == 0)
    return results


def gather_samples(rows: Tensor, total: int, world: World) -> Tensor:
    """Every process's rows for its samples ``rank, rank + world, ...`` put back in sample order:
    [total, ...] on every process."""
    if world.size == 1:
        return rows
    # shards differ by at most one sample: pad each to the longest, gather, and interleave; sample
    # i * size + rank is row i of process rank, and the padding lands past `total`
    longest = -(-total // world.size)
    padded = rows.new_zeros(longest, *rows.shape[1:])
    padded[: len(rows)] = rows
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded)
    return torch.stack(parts, 1).flatten(0, 1)[:total]
