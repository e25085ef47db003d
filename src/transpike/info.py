"""What a saved network is: its file header, where it came from, its digest and what it converted.

``transpike info FILE`` prints it (``--json``: as one JSON document), so a network passed on as a
file can be checked before it is evaluated: the model and options it was converted with, the
calibration data and checkpoint it came from (the checkpoint's SHA-256 tells which file it was),
and the digest that ``eval --resume`` and a results file's readers can match.
"""

from __future__ import annotations

from pathlib import Path

from .fingerprints import set_digest
from .io import load, read_header
from .model import ConversionReport, ReportRow
from .models import spec_name


def network_info(path: str | Path) -> dict:
    """The description of the network saved at ``path``: ``file``, ``bytes``, ``written_by``
    (transpike's version), ``model`` (name and arguments), ``options``, ``provenance``,
    ``calibration_fingerprints`` (how many it keeps, :mod:`transpike.fingerprints`; None: none),
    ``calibration_set`` (their :func:`~transpike.fingerprints.set_digest`; None: none),
    ``digest``, ``ann_parameters`` and ``report`` (``counts`` per role and ``rows``: path, module type, role,
    detail).

    Raises:
        ValueError: the file is missing, not a transpike network file, or does not load.
    """
    header = read_header(path)
    snn = load(path)
    report = snn.report()
    spec = snn.model_spec or {}
    kept = snn.calibration_fingerprints
    return dict(
        file=str(path),
        bytes=Path(path).stat().st_size,
        written_by=header.get("transpike"),
        model=dict(name=spec_name(spec) if spec else None, kwargs=spec.get("kwargs", {})),
        options=snn.options,
        provenance=snn.provenance,
        calibration_fingerprints=None if kept is None else len(kept),
        calibration_set=None if kept is None else set_digest(kept),
        digest=snn.digest(),
        ann_parameters=sum(value.numel() for value in snn.ann_state_dict().values()),
        report=dict(counts=report.counts(), rows=[vars(row) for row in report.rows]),
    )


def format_info(info: dict) -> str:
    """The description of :func:`network_info` as the command line prints it."""
    model = info["model"]
    arguments = ", ".join(f"{k}={v}" for k, v in model["kwargs"].items())
    options = ", ".join(f"{k}={v}" for k, v in info["options"].items() if v is not None)
    lines = [
        f"{info['file']}: a spiking network written by transpike {info['written_by']}, "
        f"{info['bytes'] / 1e6:.1f} MB",
        f"model: {model['name'] or 'not recorded'}" + (f" ({arguments})" if arguments else ""),
        f"ANN parameters: {info['ann_parameters'] / 1e6:.2f} M",
        f"conversion: {options}",
    ]
    calibration = info["provenance"].get("calibration")
    if calibration:
        shape = "×".join(str(n) for n in calibration.get("sample_shape", []))
        source = calibration.get("data", "data given in Python")
        batch = f", batch size {calibration['batch_size']}" if "batch_size" in calibration else ""
        lines.append(f"calibrated on: {source}, {calibration['samples']} samples of {shape} in "
                     f"{calibration['batches']} batches{batch}")  # fmt: skip
    else:
        lines.append("calibrated on: not recorded (a file written before transpike kept it)")
    kept = info["calibration_fingerprints"]
    lines.append(
        f"calibration samples: {kept} fingerprints kept (set {info['calibration_set']}), so an evaluation "
        "counts those it meets"
        if kept is not None
        else "calibration samples: no fingerprints kept (a file written before transpike kept them)"
    )
    checkpoint = info["provenance"].get("checkpoint")
    if checkpoint:
        lines.append(f"checkpoint: {checkpoint['path']} (SHA-256 {checkpoint['sha256']})")
    if "command" in info["provenance"]:
        lines.append(f"converted by: {info['provenance']['command']}")
    report = ConversionReport([ReportRow(**row) for row in info["report"]["rows"]])
    return "\n".join([*lines, f"digest: {info['digest']}", "", str(report)])
