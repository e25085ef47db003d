"""What ``--limit N`` measures on data stored class by class: the first N samples against N spread
evenly (``transpike.data.spread``, what ``evaluate(limit=N)`` takes).

The digits ViT (``transpike.digits``, paper-default conversion) on its 719 test images sorted by
class, as an image folder stores them. For each N: the classes the N samples cover, and the ANN's
and the SNN's top-1 at T = 8 (and the SNN's at t = 2) on the first N and on N spread evenly, next to
the whole set's.

    python benchmarks/limit.py [--out benchmarks/out/limit.json]
"""

from __future__ import annotations

from accuracy import digits_setup, write_output
from torch.utils.data import Subset, TensorDataset

import transpike
from transpike.data import spread
from transpike.evaluate import evaluate

T = 8
SIZES = (36, 72, 144, 360)


def scores(snn, model, data) -> dict:
    result = evaluate(snn, model, data, T, 256, progress=False, energy=False, exits=())
    labels = {int(data[i][1]) for i in range(len(data))}
    return dict(
        classes=len(labels), ann=result["ann_top1"], snn_t2=result["snn_top1"][1], snn=result["snn_top1"][-1]
    )


def main() -> None:
    args, model, x_train, test = digits_setup(__doc__, "benchmarks/out/limit.json")
    x, y = test.tensors
    order = y.argsort(stable=True)
    by_class = TensorDataset(x[order], y[order])
    snn = transpike.convert(model, x_train.split(256))
    whole = scores(snn, model, by_class)
    rows = [dict(size=len(by_class), first=whole, spread=whole)]
    for size in SIZES:
        first, even = (Subset(by_class, list(range(size))), Subset(by_class, spread(len(by_class), size)))
        rows.append(dict(size=size, first=scores(snn, model, first), spread=scores(snn, model, even)))
    write_output(args.out, test, rows, time_steps=T)
    columns = "classes | ANN | SNN t = 2 | SNN t = 8"
    print(f"| N | first N: {columns} | spread: {columns} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [
            f"{r['classes']} | {r['ann']:.2f} | {r['snn_t2']:.2f} | {r['snn']:.2f}"
            for r in (row["first"], row["spread"])
        ]
        print(f"| {row['size']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
