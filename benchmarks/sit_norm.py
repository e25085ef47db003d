"""SI-norm's spike-train length N: network error and energy of method="sit" by N.

SI-norm's output resolution is 1/N and, counted by `transpike.account`, each softmax row costs
about N accumulates per step in SI-norm alone. For the digits ViT (its test set; rows of 17) and a
random-init vit_tiny at 64 and 224 px (a batch of 8; rows of 17 and 197), burst neurons + mse
thresholds (where the spiking softmax's own error shows), SI-exp K = 12 and 32, N = 2^8 .. 2^16
and the default ("auto": 256 × the row length, rounded to a power of two):

- relative L2 error of the logits against the ANN after t = 1, 4, 16, with SI-norm as shipped
  (half charged at the start: N·w/V_th rounded) and as the paper states it (v(0) = 0: floored);
- SNN/ANN energy after t = 4, full form, and the spiking softmaxes' share of it (first 64 inputs);
- ECMT with the same neurons, for reference.

    python benchmarks/sit_norm.py
"""

from __future__ import annotations

import json
import platform

import torch
from sit import BURST, OUT, logit_errors, random_vit

import transpike
import transpike.sit
from transpike.digits import load_digits_split, trained_digits_vit

NORM_SPIKES = (2**8, 2**10, 2**12, 2**14, 2**16, None)  # None: the default, about 256 × the row length
STEPS = (12, 32)


def paper_si_norm(weight: torch.Tensor, v_th: torch.Tensor, spikes: int) -> torch.Tensor:
    """SI-norm as the paper starts it, v(0) = 0: floor(N·w/V_th)/N."""
    return torch.floor(spikes * weight / v_th) / spikes


def energy(snn: transpike.SpikingModel, x: torch.Tensor) -> dict:
    report = transpike.account(snn, x[:64], 4)
    return dict(
        full=report.ratio["full"][-1],
        softmax_share=report.e_ac * sum(report.softmax_acs) / report.ann_energy,
        softmax_acs_per_step=report.softmax_acs[-1],
    )


def sweep(model: torch.nn.Module, batches: list, inputs: torch.Tensor) -> list[dict]:
    with torch.inference_mode():
        ref = model(inputs)
    ecmt = transpike.convert(model, batches, **BURST)
    rows = [dict(method="ecmt", error=logit_errors(ecmt, inputs, ref), energy=energy(ecmt, inputs))]
    shipped = transpike.sit.si_norm
    for k in STEPS:
        for n in NORM_SPIKES:
            snn = transpike.convert(model, batches, method="sit", sit_steps=k, sit_norm_spikes=n, **BURST)
            row = dict(method="sit", K=k, N=n, error=logit_errors(snn, inputs, ref))
            row["energy"] = energy(snn, inputs)
            transpike.sit.si_norm = paper_si_norm  # SpikingSoftmax looks it up at every call
            try:
                row["error_paper_start"] = logit_errors(snn, inputs, ref)
            finally:
                transpike.sit.si_norm = shipped
            rows.append(row)
            print(row, flush=True)
    return rows


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    x_train, _ = load_digits_split("train")
    x_test, _ = load_digits_split("test")
    result = dict(digits=sweep(trained_digits_vit(), x_train.split(256), x_test))
    for size in (64, 224):
        result[f"random_vit_tiny_{size}px"] = sweep(*random_vit(size))
    networks = list(result)
    result.update(machine=platform.processor() or platform.machine(), torch=torch.__version__)
    print("| network | K | N | logit error t=1 / 4 / 16 | v(0)=0: t=16 | energy t=4 (full) | softmax share |")
    print("|---|---|---|---|---|---|---|")
    for name in networks:
        for row in result[name]:
            errors = " / ".join(f"{e:.4f}" for e in row["error"])
            paper = f"{row['error_paper_start'][-1]:.4f}" if "N" in row else "-"
            print(f"| {name} | {row.get('K', 'ECMT')} | {row.get('N', '-') or 'auto'} | {errors} | {paper} | "
                  f"{row['energy']['full']:.3f} | {row['energy']['softmax_share']:.3f} |")  # fmt: skip
    (OUT / "sit_norm.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
