"""Where the error comes from: ``transpike.trace`` and ``sensitivity`` on the models of fidelity.py.

The model, its init and its data are fidelity.py's (the same flags: ``--model``, ``--img-size``,
``--batchnorm-at-one``, ``--batchnorm-stats``, ``--fill``, ``--model-kwargs``, ``--checkpoint``).
Per configuration: the output's error against the ANN by t; what the MT neurons add at t = T
(error - input error of each neuron row: the largest and the median); the largest factor by which
another module (an EC module, a layer, a product) multiplies the error reaching it at t = T (among
inputs with error above 1e-3); the largest share of one neuron layer's outputs at its top level
(θ·2^(n-1); burst: θ·(2^n - 1)) in any step: saturation. Once per model, the ANN's sensitivity:
its output error with Gaussian noise of relative size 0.01 at every MT site's input.
``--probe PATH`` adds the ANN's error at the output of the module at PATH when its input gets
Gaussian noise of relative size 0.1, 1, 3 and 10: how it answers errors of that size.

    python benchmarks/trace.py --model bat_resnext26ts --img-size 256 --batchnorm-at-one --batchnorm-stats
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from fidelity import CONFIGS, STEPS, add_setup_arguments, setup

import transpike
from transpike.trace import sensitivity, trace

NOISE = 0.01
PROBE_NOISE = (0.1, 1.0, 3.0, 10.0)


def probe(model: torch.nn.Module, path: str, x: torch.Tensor) -> dict[float, float]:
    """The ANN's relative error at the output of the module at ``path`` when its input gets
    Gaussian noise of each relative size in PROBE_NOISE (seed 2)."""
    module, seen = model.get_submodule(path), {}
    hook = module.register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    with torch.no_grad():
        model(x)
    hook.remove()
    errors = {}
    for size in PROBE_NOISE:
        noise = torch.randn(seen["x"].shape, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            y = module(seen["x"] + noise * (size * seen["x"].norm() / noise.norm()))
        errors[size] = ((y - seen["y"]).norm() / seen["y"].norm()).item()
    return errors


def amplification(result) -> tuple[float, str]:
    """The largest error / input error at t = T of a module other than a neuron, and its path."""
    T = result.time_steps
    found = [
        (row.error[T - 1] / row.input_error[T - 1], row.path)
        for row in result.rows[:-1]
        if row.kind != "neuron" and row.input_error[T - 1] > 1e-3
    ]
    return max(found) if found else (float("nan"), "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser)
    parser.add_argument("--configs", nargs="+", default=["default", "burst+mse"], choices=list(CONFIGS))
    parser.add_argument("--probe", metavar="PATH", help="a module whose answer to input noise to measure")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    stats = "-stats" if args.batchnorm_stats else ""
    out = args.out or Path(f"benchmarks/out/trace-{args.model}{stats}.json")

    model, calibration, x, fills = setup(args)  # fidelity.py's model and batches

    rows, sensitive = [], None
    for name in args.configs:
        start = time.perf_counter()
        snn = transpike.convert(model, calibration, **CONFIGS[name])
        result = trace(snn, x, max(STEPS))
        if sensitive is None:
            sensitive = sensitivity(snn, x, NOISE)
        T = result.time_steps
        added = [row.added(T) for row in result.rows if row.kind == "neuron"]
        gain, where = amplification(result)
        rows.append(
            dict(
                config=name,
                error={t: result.output.error[t - 1] for t in STEPS},
                neuron_added_max=max(added),
                neuron_added_median=statistics.median(added),
                amplification=gain,
                amplified_at=where,
                top_level_share_max=max(max(r.saturation) for r in result.rows if r.saturation),
                seconds=time.perf_counter() - start,
                trace=result.to_dict(),
            )
        )
        print(f"{name}: " + " ".join(f"{e:.3f}" for e in rows[-1]["error"].values()), flush=True)

    probed = probe(model, args.probe, x) if args.probe else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            dict(
                model=args.model,
                img_size=args.img_size,
                batchnorm_at_one=args.batchnorm_at_one,
                batchnorm_stats=args.batchnorm_stats,
                fill=fills,
                sensitivity=dict(noise=NOISE, output_error=sensitive),
                probe=dict(path=args.probe, errors=probed),
                machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                torch=torch.__version__,
                rows=rows,
            )
        )
    )
    print(f"\n{args.model}: the ANN's output error with {NOISE} noise at every MT site: {sensitive:.3g}")
    if probed:
        print(f"{args.probe} with input noise " + ", ".join(f"{k:g}: {v:.3g}" for k, v in probed.items()))
    print()
    print(
        "| configuration | error t=" + "/".join(map(str, STEPS))
        + " | neurons add at t=16: max / median | largest amplification at t=16 (module)"
        + " | top-level share, max |"
    )  # fmt: skip
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['config']} | " + " / ".join(f"{e:.3f}" for e in r["error"].values())
            + f" | {r['neuron_added_max']:.3f} / {r['neuron_added_median']:.4f}"
            + f" | {r['amplification']:.2f}× (`{r['amplified_at']}`) | {r['top_level_share_max']:.4f} |"
        )  # fmt: skip


if __name__ == "__main__":
    main()
