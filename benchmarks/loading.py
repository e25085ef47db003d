"""How fast a folder of JPEGs reaches the network: ``--workers`` loading processes against none.

Writes ``--images`` JPEGs shaped like ImageNet's (500x375, quality 90, smooth content with fine
noise) into a temporary image folder, and a list file naming them with their classes, reads them
with transpike's loading (``imagefolder:`` and ``filelist:``, the preprocessing of timm's
vit_small_patch16_224: resize, 224 px centre crop, normalize) through the DataLoader ``evaluate``
builds, and reports images per second for each spec and number of workers, median of ``--repeats``
passes, alternating, and the seconds each spec takes to open the data (the list checks that every
image it names exists). What a GPU simulates per second is in BENCHMARKS.md §3b.

    python benchmarks/loading.py [--images 512] [--workers 0 1 2] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
from PIL import Image
from torch.utils.data import DataLoader

from transpike.data import load_dataset


def write_jpegs(root: Path, count: int) -> None:
    """``count`` 500x375 JPEGs in two class folders: upsampled coarse noise plus fine noise."""
    gen = np.random.default_rng(0)
    for i in range(count):
        coarse = Image.fromarray(gen.integers(0, 256, (48, 64, 3), dtype=np.uint8)).resize(
            (500, 375), Image.BICUBIC
        )
        pixels = np.asarray(coarse, dtype=np.int16) + gen.integers(-8, 9, (375, 500, 3))
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/loading.json"))
    args = parser.parse_args()
    model = timm.create_model("vit_small_patch16_224")
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp), args.images)
        jpeg_kib = sum(f.stat().st_size for f in Path(tmp).rglob("*.jpg")) / args.images / 1024
        jpegs = sorted(Path(tmp).rglob("*.jpg"))  # classN/i.jpg, listed with class N
        lines = (f"{path.relative_to(tmp)} {path.parent.name.removeprefix('class')}" for path in jpegs)
        (Path(tmp) / "list.txt").write_text("\n".join(lines) + "\n")
        opening, datasets = {}, {}
        for spec in (f"imagefolder:{tmp}", f"filelist:{tmp}/list.txt"):
            start = time.perf_counter()
            datasets[spec.partition(":")[0]] = load_dataset(spec, "test", model)
            opening[spec.partition(":")[0]] = time.perf_counter() - start
        seconds = {(kind, workers): [] for kind in datasets for workers in args.workers}
        for _ in range(args.repeats):
            for kind, workers in seconds:
                start = time.perf_counter()
                for _batch in DataLoader(datasets[kind], args.batch_size, num_workers=workers):
                    pass
                seconds[kind, workers].append(time.perf_counter() - start)
    rate = {key: args.images / statistics.median(values) for key, values in seconds.items()}
    base = rate["imagefolder", args.workers[0]]
    print(f"{args.images} JPEGs ({jpeg_kib:.0f} KiB each), batch {args.batch_size}, "
          f"{platform.processor() or platform.machine()}; opening the data: "
          + ", ".join(f"{kind} {value:.3f} s" for kind, value in opening.items()))  # fmt: skip
    print("| data | workers | images/s (median) | ratio |\n|---|---|---|---|")
    for (kind, workers), value in rate.items():
        print(f"| {kind} | {workers} | {value:.0f} | {value / base:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = [dict(data=kind, workers=workers, seconds=seconds[kind, workers], images_per_s=value)
             for (kind, workers), value in rate.items()]  # fmt: skip
    args.out.write_text(json.dumps(dict(images=args.images, jpeg_kib=jpeg_kib, batch_size=args.batch_size,
                                        opening_s=opening, rows=table), indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
