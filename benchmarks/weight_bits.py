"""Synaptic precision on the digits ViT: what storing the synaptic weights with b bits costs.

The small ViT of ``transpike.digits`` is converted with ``weight_bits`` = 8, 6, 4, 3, 2 (one scale per
output channel, and 8 and 4 with one scale per layer; 4, 3 and 2 also with the least-squares scale,
``weight_scale="mse"``) and without (float), for the paper's default
and for burst neurons with mse thresholds; calibrated on the training split, evaluated on the test
split against the float ANN. Per run: SNN top-1 after t = 1, 2, 4, 8, the share of test images
decided as the float ANN decides (agreement) at t = 4 and 8, the top-1 of the ANN holding the same
rounded weights (what rounding costs before any spike), and at t = 8 the exact McNemar p of the
b-bit SNN against the float SNN of the same conversion (the same test images, paired).

    python benchmarks/weight_bits.py [--out benchmarks/out/weight_bits.json]
"""

from __future__ import annotations

from accuracy import digits_setup, write_output

import transpike
from transpike.evaluate import evaluate
from transpike.scores import mcnemar_p

T = 8
CONVERSIONS = {"paper default": {}, "burst + mse": dict(neuron="burst", threshold="mse")}
PRECISIONS = {
    "float": {},
    "8 bits": dict(weight_bits=8),
    "6 bits": dict(weight_bits=6),
    "4 bits": dict(weight_bits=4),
    "3 bits": dict(weight_bits=3),
    "8 bits, one scale per layer": dict(weight_bits=8, weight_granularity="tensor"),
    "4 bits, one scale per layer": dict(weight_bits=4, weight_granularity="tensor"),
    "4 bits, least-squares scale": dict(weight_bits=4, weight_scale="mse"),
    "3 bits, least-squares scale": dict(weight_bits=3, weight_scale="mse"),
    "2 bits": dict(weight_bits=2),
    "2 bits, least-squares scale": dict(weight_bits=2, weight_scale="mse"),
}


def main() -> None:
    args, model, x_train, test = digits_setup(__doc__, "benchmarks/out/weight_bits.json")
    rows = []
    for conversion, options in CONVERSIONS.items():
        reference = None
        for precision, bits in PRECISIONS.items():
            snn = transpike.convert(model, x_train.split(256), **options, **bits)
            result = evaluate(snn, model, test, T, batch_size=256, progress=False, predictions=True)
            right = result["predictions"]["snn"][:, -1] == result["predictions"]["labels"]
            reference = right if reference is None else reference
            rows.append(
                dict(
                    conversion=conversion,
                    precision=precision,
                    options={**options, **bits},
                    ann_top1=result["ann_top1"],
                    rounded_ann_top1=result.get("rounded_ann_top1", result["ann_top1"]),
                    snn_top1=result["snn_top1"],
                    agreement=result["agreement"],
                    energy_ecmt=result["energy"].ratio["ecmt"],
                    p_against_float=mcnemar_p((reference & ~right).sum(), (right & ~reference).sum()).item(),
                )
            )
            top1 = " ".join(f"{a:.2f}" for a in result["snn_top1"])
            print(f"{conversion}, {precision}: {top1}", flush=True)
    ann = rows[0]["ann_top1"]
    write_output(args.out, test, rows, ann_top1=ann)
    print(f"\nfloat ANN top-1 {ann:.2f} % on {len(test)} test images")
    print(
        "\n| conversion | synapses | ANN with them - ANN | SNN - ANN t = 1 / 2 / 4 / 8 "
        "| same top-1 as the ANN t = 4 / 8 | p against float at t = 8 | energy t = 4 |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['conversion']} | {r['precision']} | {r['rounded_ann_top1'] - ann:+.2f} | "
            + " / ".join(f"{r['snn_top1'][t - 1] - ann:+.2f}" for t in (1, 2, 4, 8))
            + " | " + " / ".join(f"{r['agreement'][t - 1]:.2f}" for t in (4, 8))
            + f" | {r['p_against_float']:.3f} | {r['energy_ecmt'][3]:.2f} |"
        )  # fmt: skip


if __name__ == "__main__":
    main()
