"""What keeping an evaluation's totals for ``--resume`` costs, and that a resumed run ends where an
uninterrupted one does.

A random-init timm model on random images (nothing downloaded), converted once; then, alternating,
``evaluate`` without totals, with totals saved after every batch (``every=0``, the worst case) and
with the default interval (one save at the end of a short run); medians of ``--repeats``. Also the
network digest's time, the size of one totals file, what one snapshot and save of the totals take
(each batch takes a snapshot), and an evaluation stopped halfway (its data raises
KeyboardInterrupt, as Ctrl-C would) then resumed with another batch size: its results must equal
the uninterrupted run's.

    python benchmarks/resume.py [--model vit_small_patch16_224] [--samples 32] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import timm
import torch
from torch.utils.data import Dataset, TensorDataset

import transpike
from transpike.evaluate import evaluate
from transpike.progress import Progress
from transpike.spikes import SpikeMonitor


class StopsAt(Dataset):
    """``data`` whose sample ``index`` raises KeyboardInterrupt: a run stopped between batches."""

    def __init__(self, data: Dataset, index: int) -> None:
        self.data, self.index = data, index

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        if i == self.index:
            raise KeyboardInterrupt
        return self.data[i]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/resume.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=10).eval()
    size = model.default_cfg["input_size"]
    images = torch.randn(args.samples, *size)
    data = TensorDataset(images, torch.randint(0, 10, (args.samples,)))
    snn = transpike.convert(model, [images[:8]])
    start = time.perf_counter()
    snn.digest()
    digest_s = time.perf_counter() - start
    with torch.inference_mode(), SpikeMonitor(snn) as monitor, tempfile.TemporaryDirectory() as tmp:
        snn.simulate(images[: args.batch_size], args.time_steps)
        store, start = Progress(Path(tmp), "timed", {}, resume=False, every=0), time.perf_counter()
        for _ in range(10):  # what each batch adds: a snapshot of the totals, and saving it
            store.save({}, 0, dict(counts=torch.zeros(2 + args.time_steps), **monitor.state(args.time_steps)))
        per_batch_s = (time.perf_counter() - start) / 10

    def run(store: Progress | None, dataset: Dataset = data, batch_size: int = args.batch_size) -> dict:
        return evaluate(snn, model, dataset, args.time_steps, batch_size, progress=False, store=store)

    with tempfile.TemporaryDirectory() as tmp:
        kinds = {
            "no totals": lambda: None,
            "saved every batch": lambda: Progress(Path(tmp), "every", {}, resume=False, every=0),
            "default interval": lambda: Progress(Path(tmp), "default", {}, resume=False),
        }
        seconds = {kind: [] for kind in kinds}
        for _ in range(args.repeats):
            for kind, store in kinds.items():
                start = time.perf_counter()
                whole = run(store())
                seconds[kind].append(time.perf_counter() - start)
        file_bytes = (Path(tmp) / "every.rank0.safetensors").stat().st_size
        half = args.samples // 2 // args.batch_size * args.batch_size
        with contextlib.suppress(KeyboardInterrupt):
            run(Progress(Path(tmp), "stopped", {}, resume=False), StopsAt(data, half))
        resumed = run(Progress(Path(tmp), "stopped", {}, resume=True), batch_size=args.batch_size * 2)
    equal = all(resumed[k] == whole[k] for k in ("num_samples", "ann_top1", "snn_top1"))
    equal &= resumed["energy"].to_dict() == whole["energy"].to_dict()
    medians = {kind: statistics.median(values) for kind, values in seconds.items()}
    base = medians["no totals"]
    print(f"{args.model}, {args.samples} samples, batch {args.batch_size}, T = {args.time_steps}, "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")  # fmt: skip
    print("| totals kept | eval s (median) | ratio to none |\n|---|---|---|")
    for kind, value in medians.items():
        print(f"| {kind} | {value:.2f} | {value / base:.3f} |")
    print(f"digest: {digest_s:.2f} s; totals file: {file_bytes / 1024:.1f} KiB; snapshot and save: "
          f"{per_batch_s * 1e3:.1f} ms")  # fmt: skip
    print(f"stopped after {half} samples, resumed with batch {args.batch_size * 2}: "
          f"{resumed['resumed_samples']} samples restored, results equal: {equal}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(
        model=args.model, samples=args.samples, batch_size=args.batch_size, time_steps=args.time_steps,
        seconds=seconds, medians=medians, digest_s=digest_s, file_bytes=file_bytes, per_batch_s=per_batch_s,
        resumed_samples=resumed["resumed_samples"], resumed_equal=equal,
    ), indent=1))  # fmt: skip
    if not equal:
        raise SystemExit("the resumed evaluation's results differ from the uninterrupted run's")


if __name__ == "__main__":
    main()
