"""The ``transpike`` command: demo, convert, eval, trace, compare, energy, info.

    transpike demo [--out DIR] [--time-steps 8]
    transpike convert --model NAME [--model-kwargs k=v ...] [--checkpoint FILE] [--weights NAME] --calib DATA
        --out SNN_FILE
    transpike eval (--snn SNN_FILE | --model NAME ... --calib DATA) --data DATA --time-steps T --out DIR
        [--resume]
    transpike trace (--snn SNN_FILE | --model NAME ... --calib DATA) --data DATA --time-steps T --out DIR
    transpike compare REFERENCE RUN [RUN ...] [--out DIR]
    transpike energy RESULTS [--arithmetic fp32|fp16|int8] [--e-mac PJ] [--e-ac PJ] [--e-float PJ] [--json]
    transpike info SNN_FILE [--json]

Errors in what the user gave (a missing file, an unknown model, a bad option) print one line and
exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from . import digits
from ._version import __version__
from .compare import compare
from .convert import GRANULARITIES, METHODS, THRESHOLDS, ConversionOptions, convert
from .data import SPEC_HELP, has_labels, load_dataset, parse_spec, spread
from .energy import ARITHMETIC, EnergyReport, check_costs
from .errors import ConversionError, FusionError, GraphError
from .evaluate import World, evaluate, init_world
from .exits import EXITS, ExitRule, check_rules
from .fingerprints import fingerprints, set_digest
from .info import format_info, network_info
from .io import file_sha256, load, rebuild_ann, save
from .model import SpikingModel
from .models import cached_weights, create_model, load_checkpoint, model_spec, spec_name, torchvision_weights
from .neurons import NEURONS, ROUNDINGS
from .plots import sweep_label
from .precision import SCALES
from .predictions import FILE as PREDICTIONS_FILE
from .predictions import file_name, load_predictions, save_predictions
from .progress import FOLDER as PROGRESS_FOLDER
from .progress import Progress
from .results import (
    check_output_dir,
    format_classes,
    format_comparison,
    format_exit_table,
    format_sweep_table,
    format_table,
    write_classes,
    write_comparison,
    write_results,
    write_trace,
)
from .scores import per_class
from .sit import MODES as SIT_MODES
from .trace import rounding, sensitivity, trace

CALIBRATION = dict(calib_batches=16, calib_batch_size=32)  # the calibration sample's defaults


class UsageError(ValueError):
    """A problem with what the user asked for."""


def parse_kwargs(items: list[str]) -> dict:
    """``k=v`` pairs; values are Python literals where they parse (3, 0.1, True, (1, 2)), else strings."""
    kwargs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--model-kwargs: expected key=value, got {item!r}")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return kwargs


def int_or(word: str) -> Callable[[str], int | None]:
    """An argparse type: an integer, or ``word`` for None (``--sit-norm-spikes auto``: from each
    softmax's row length; ``--weight-bits float``: not rounded)."""

    def parse(text: str) -> int | None:
        if text == word:
            return None
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer or {word!r}, got {text!r}") from None

    return parse


class PathBits(argparse.Action):
    """``--weight-bits-at PATH=B ...``: {path: bits}, B a number of bits or "float"."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        pairs = [value.partition("=") for value in values]
        if not all(path and sep for path, sep, _ in pairs):
            raise argparse.ArgumentError(self, f"expected PATH=B pairs, got {' '.join(values)}")
        try:
            setattr(namespace, self.dest, {path: int_or("float")(bits) for path, _, bits in pairs})
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentError(self, str(error)) from None


def add_conversion_args(parser: argparse.ArgumentParser, sweep: bool = False) -> None:
    """The conversion options' flags; with ``sweep`` (``eval``), --weight-bits takes several values."""
    group = parser.add_argument_group("conversion")
    group.add_argument("--method", default="ecmt", choices=METHODS)
    group.add_argument(
        "--levels", type=int, default=None, help="MT levels per sign (default 7·S + 1: 8 octaves)"
    )
    group.add_argument(
        "--levels-per-octave",
        type=int,
        default=1,
        metavar="S",
        help="MT levels θ·2^(k/S), S to an octave: one spike per step, of a finer size (default 1: ECMT's)",
    )
    group.add_argument("--percentile", type=float, default=99.0, help="threshold percentile p (default 99)")
    group.add_argument("--threshold", default="percentile", choices=THRESHOLDS)
    group.add_argument("--horizon", type=int, default=4, help="steps the mse threshold search optimizes for")
    group.add_argument("--granularity", default="tensor", choices=GRANULARITIES)
    group.add_argument("--rounding", default="greedy", choices=ROUNDINGS)
    group.add_argument("--neuron", default="mt", choices=NEURONS)
    group.add_argument(
        "--no-compensation",
        dest="compensation",
        action="store_false",
        help="ablation: no expectation compensation",
    )
    group.add_argument(
        "--non-strict", dest="strict", action="store_false", help="leave modules without a rule analog"
    )
    group.add_argument(
        "--sit-steps",
        type=int,
        default=12,
        help="SI-exp steps K for --method sit: 4..16, 20, 24, 28 or 32 (default 12)",
    )
    group.add_argument(
        "--sit-mode", default="shift", choices=SIT_MODES, help="spiking softmax input handling"
    )
    group.add_argument(
        "--sit-norm-spikes",
        type=int_or("auto"),
        default=None,
        help="SI-norm's spike-train length N for --method sit: resolution 1/N, about N ACs per "
        "softmax row and step (default auto: 256 x the row length rounded to a power of two)",
    )
    several = "; several B (and 'float'): accuracy as B falls, one conversion each" if sweep else ""
    group.add_argument(
        "--weight-bits", type=int_or("float"), nargs="+" if sweep else None, default=None, metavar="B",
        help="round every synaptic weight (the layers fed by spikes) to B bits, 2..16, before "
        f"calibration: the accuracy of a chip that stores them so (default: float){several}",
    )  # fmt: skip
    group.add_argument(
        "--weight-granularity", default="channel", choices=GRANULARITIES,
        help="one scale per output channel (default) or per layer, for --weight-bits",
    )  # fmt: skip
    group.add_argument(
        "--weight-bits-at", nargs="+", action=PathBits, default=None, metavar="PATH=B",
        help="with --weight-bits: the layers at or under module PATH keep B bits ('float': not rounded), "
        "e.g. head=8 (trace --weight-bits lists the layers whose rounding costs the most)",
    )  # fmt: skip
    group.add_argument(
        "--weight-scale", default="max", choices=SCALES,
        help="for --weight-bits: the largest weight at the grid's end (default), or the scale of least "
        "squared rounding error (clips the largest weights; pays at few bits)",
    )  # fmt: skip


def add_energy_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("energy")
    group.add_argument("--no-energy", action="store_true", help="skip spike and energy accounting")
    add_price_args(group)


def add_price_args(group: argparse._ActionsContainer) -> None:
    """--arithmetic and the energy of each operation it sets (see :func:`energy_prices`)."""
    group.add_argument(
        "--arithmetic", default="fp32", choices=ARITHMETIC,
        help="the number format of the chip, the SNN's and its ANN's alike, which sets the energy of "
        "one operation (45 nm): " + "; ".join(
            f"{name}: MAC {c['e_mac']:g}, AC {c['e_ac']:g}, float op {c['e_float']:g} pJ"
            for name, c in ARITHMETIC.items()
        ) + " (int8 accumulates in 32 bits; its float work stays fp32)",
    )  # fmt: skip
    operations = dict(mac="multiply-accumulate", ac="accumulate", float="elementwise float op")
    for name, what in operations.items():
        group.add_argument(f"--e-{name}", type=float, help=f"pJ per {what} (default: the --arithmetic's)")


def add_model_args(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        required=required,
        help="timm model name, local-dir:DIR for a timm model saved in a directory (config.json, "
        "model.safetensors), torchvision:NAME for a torchvision model, hf:CLASS or hf:DIR for a "
        "Hugging Face transformers image classifier (the families README.md's Supported models lists)",
    )
    group.add_argument(
        "--model-kwargs",
        nargs="*",
        default=[],
        metavar="K=V",
        help="passed to timm.create_model (or torchvision.models.get_model; for hf:, to its configuration)",
    )
    group.add_argument("--checkpoint", help="safetensors or torch file (read with weights_only=True)")
    group.add_argument(
        "--weights", metavar="NAME",
        help="torchvision weights the model was trained as (e.g. IMAGENET1K_V1): images get their preset; "
        "without --checkpoint, the weights are read from torch.hub's cache",
    )  # fmt: skip
    group.add_argument("--calib", help=f"calibration data: {SPEC_HELP} (default split: train)")
    group.add_argument(
        "--calib-batches", type=int, default=CALIBRATION["calib_batches"],
        help=f"calibration batches (default {CALIBRATION['calib_batches']})",
    )  # fmt: skip
    group.add_argument(
        "--calib-batch-size", type=int, default=CALIBRATION["calib_batch_size"],
        help=f"calibration batch size (default {CALIBRATION['calib_batch_size']}); not --batch-size, so "
        "how a network is evaluated does not change it",
    )  # fmt: skip
    group.add_argument(
        "--workers", type=int,
        help="processes that read and preprocess images (default: none on the CPU, where simulating needs "
        "the cores; on a GPU, which one process decoding JPEGs cannot keep busy, up to 8 per GPU)",
    )  # fmt: skip


def conversion_options(args: argparse.Namespace) -> dict:
    """The conversion options given on the command line (``blocks`` is handled per command)."""
    return {name: getattr(args, name) for name in ConversionOptions.__dataclass_fields__ if name != "blocks"}


def positive(name: str, value: int, least: int = 1) -> int:
    if value < least:
        raise UsageError(f"{name} must be >= {least}, got {value}")
    return value


def calibration_batches(dataset, batches: int, batch_size: int, workers: int = 0) -> list[torch.Tensor]:
    """The first ``batches`` batches of a seeded shuffle (the same on every process, for any number
    of ``workers``: the order is drawn here)."""
    order = torch.Generator().manual_seed(0)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=order, num_workers=workers)
    out = []
    for x, _ in loader:
        out.append(x)
        if len(out) == batches:
            break
    return out


def model_and_calibration(args: argparse.Namespace) -> tuple[torch.nn.Module, list[torch.Tensor], dict, dict]:
    """The ANN the options describe, its calibration batches, its model spec and where they came
    from (the calibration data and, with its SHA-256, the checkpoint: ``convert``'s provenance)."""
    if not args.calib:
        raise UsageError("--calib is required to convert a model")
    positive("--calib-batches", args.calib_batches)
    positive("--calib-batch-size", args.calib_batch_size)
    workers = 0 if args.workers is None else positive("--workers", args.workers, least=0)
    kwargs = parse_kwargs(args.model_kwargs)
    ann = create_model(args.model, kwargs)
    weights = torchvision_weights(args.model, args.weights) if args.weights else None
    spec = model_spec(args.model, kwargs, weights, ann)
    calibration = load_dataset(args.calib, "train", ann, spec.get("weights"))  # checks the preset's size
    checkpoint = args.checkpoint or (weights and cached_weights(weights))
    provenance = dict(
        calibration=dict(data=args.calib, batch_size=args.calib_batch_size), command=args.command
    )
    if checkpoint:
        load_checkpoint(ann, checkpoint)
        provenance["checkpoint"] = dict(path=str(checkpoint), sha256=file_sha256(checkpoint))
    batches = calibration_batches(calibration, args.calib_batches, args.calib_batch_size, workers)
    return ann, batches, spec, provenance


def cmd_convert(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"--out {out}: file exists; pass --force to replace it")
    ann, batches, spec, provenance = model_and_calibration(args)
    snn = convert(ann, batches, **conversion_options(args), blocks=args.blocks, model_spec=spec,
                  provenance=provenance)  # fmt: skip
    save(snn, out, overwrite=True)
    print(snn.report())
    print(f"\nwrote {out}")
    return 0


def energy_prices(args: argparse.Namespace) -> dict[str, float]:
    """The energy of each operation (pJ): the --arithmetic's, where --e-mac, --e-ac or --e-float does
    not set it."""
    given = {k: getattr(args, k) for k in ARITHMETIC[args.arithmetic] if getattr(args, k) is not None}
    check_costs({"--" + k.replace("_", "-"): v for k, v in given.items()})
    return ARITHMETIC[args.arithmetic] | given


@dataclass(frozen=True)
class EvalSettings:
    """How an evaluation runs and where its results go."""

    time_steps: int
    batch_size: int
    limit: int | None
    device: str
    fuse: bool
    graphs: bool
    out: Path
    energy: bool
    e_mac: float
    e_ac: float
    e_float: float
    resume: bool = False
    workers: int = 0
    exits: tuple[ExitRule, ...] = EXITS
    against_ann: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides) -> EvalSettings:
        values = {name: getattr(args, name) for name in cls.__dataclass_fields__ if hasattr(args, name)}
        values["energy"] = not args.no_energy
        values.update(energy_prices(args))
        if hasattr(args, "exit_confidence"):
            values["exits"] = exit_rules(args)
        values.update(overrides)
        values["out"] = Path(values["out"])
        return cls(**values)


def run_evaluation(
    snn: SpikingModel,
    ann: torch.nn.Module,
    dataset,
    settings: EvalSettings,
    meta: dict,
    world: World,
    write: bool = True,
    name: str | None = None,
    predictions_file: str = PREDICTIONS_FILE,
) -> dict:
    """Evaluate, print the table and (on rank 0) write every sample's predictions to
    ``predictions_file`` and, if ``write``, the result files; with a ``name``, keep the running
    totals under it in ``OUT/progress`` (:mod:`transpike.progress`)."""
    start = time.perf_counter()
    snn.fuse(settings.fuse).to(settings.device).graph(settings.graphs)
    store = (
        Progress(settings.out / PROGRESS_FOLDER, name, dict(data=meta["data"]), settings.resume)
        if name
        else None
    )
    counts = evaluate(
        snn, ann, dataset, settings.time_steps, settings.batch_size, settings.limit, settings.device, world,
        energy=settings.energy, e_mac=settings.e_mac, e_ac=settings.e_ac, e_float=settings.e_float,
        store=store,
        workers=settings.workers, exits=settings.exits, predictions=True,
        against_ann=settings.against_ann or not has_labels(dataset),  # without labels, only against the ANN
    )  # fmt: skip
    chosen, known = counts.pop("predictions"), snn.calibration_fingerprints
    report = counts.pop("energy", None)
    if report is not None:
        counts["energy"] = report.to_dict()
    results = dict(
        **meta,
        method=snn.options["method"],
        time_steps=settings.time_steps,
        **counts,
        options=snn.options,
        provenance=snn.provenance,
        calibration_set=None if known is None else set_digest(known),
        device=settings.device,
        fused=settings.fuse,
        graphs=settings.graphs,
        processes=world.size,
        workers=settings.workers,
        seconds=round(time.perf_counter() - start, 2),
        transpike=__version__,
        predictions_file=predictions_file,
    )
    if world.is_main:
        kept = ("model", "data", "snn_file", "options", "calibration_set", "scored_against", "transpike")
        names = getattr(dataset, "classes", None)  # an image folder's or a list's class names
        about = {k: results[k] for k in kept} | ({"class_names": list(names)} if names else {})
        if report is not None:  # what each t costs, for a comparison to weigh against its accuracy
            costs = ("energy_ratio", "energy_ratio_full", "e_mac_pj", "e_ac_pj", "e_float_pj")
            about.update({k: results["energy"][k] for k in costs})
        paths = [save_predictions(chosen, about, settings.out / predictions_file)]
        classes = per_class(chosen["labels"], chosen["ann"], chosen["snn"])
        # classes.csv beside predictions.safetensors (classes.blocks-K.csv in a --blocks sweep)
        middle = predictions_file.removeprefix("predictions").removesuffix(".safetensors")
        paths.append(write_classes(classes, settings.out / f"classes{middle}.csv", names))
        print(format_table(results))
        print(format_classes(classes, names))
        if report is not None:
            print("\n" + report.summary())
        if "early_exit" in results:
            print("\n" + format_exit_table(results))
        if write:
            paths = write_results(results, settings.out) + paths
        print("\nwrote " + ", ".join(str(p) for p in paths))
    return results


# the early-exit rules (transpike.exits): flag, type, metavar, what the rule asks
EXIT_FLAGS = (
    ("confidence", float, "C", "its top-1 probability reaches C"),
    ("entropy", float, "H", "the entropy of its softmax, over log(classes), is at most H"),
    ("margin", float, "M", "its top-1 probability leads the second by at least M"),
    ("stable", int, "S", "its top-1 class is that of the S steps before"),
)


def exit_rules(args: argparse.Namespace) -> tuple[ExitRule, ...]:
    """The early-exit rules of the ``--exit-KIND`` flags; a bad value names its flag."""
    rules = []
    for kind, *_ in EXIT_FLAGS:
        try:
            rules += check_rules([ExitRule(kind, value) for value in getattr(args, f"exit_{kind}")])
        except ValueError as error:
            raise UsageError(f"--exit-{kind}: {error}") from None
    return tuple(rules)


def check_eval_args(args: argparse.Namespace) -> None:
    positive("--time-steps", args.time_steps)
    positive("--batch-size", args.batch_size)
    if args.workers is not None:
        positive("--workers", args.workers, least=0)
    if args.limit is not None:
        positive("--limit", args.limit)
    exit_rules(args)
    if args.resume and args.force:
        raise UsageError("--resume continues an interrupted evaluation, --force starts over: give one")
    if args.graphs and not args.device.startswith("cuda"):
        raise UsageError(f"--graphs: CUDA graphs need --device cuda, not {args.device}")
    if args.graphs and not args.no_energy:
        raise UsageError("--graphs: a CUDA graph cannot count spikes (Python hooks); add --no-energy")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")


def check_snn_args(args: argparse.Namespace) -> None:
    """``--snn`` brings a converted network: what would build or convert one is refused by name
    rather than silently ignored."""
    fields = ConversionOptions.__dataclass_fields__  # the declared defaults (levels: None)
    flags = {"compensation": "--no-compensation", "strict": "--non-strict"}
    given = [
        flags.get(name, "--" + name.replace("_", "-"))
        for name, value in conversion_options(args).items()
        if value != fields[name].default
    ]
    building = ("--model", "--model-kwargs", "--checkpoint", "--weights", "--calib", "--blocks")
    given += [flag for flag in building if getattr(args, flag[2:].replace("-", "_"))]
    given += [
        "--" + name.replace("_", "-") for name, value in CALIBRATION.items() if getattr(args, name) != value
    ]
    if given:
        raise UsageError(
            f"{', '.join(given)}: {args.snn} is a converted network; to convert again, "
            "give --model and --calib instead of --snn"
        )


def default_workers(device: str, cpus: int, processes: int) -> int:
    """Loading processes when ``--workers`` is not given: none on the CPU, where simulating needs
    the cores and loading takes a small share (vit_small at T = 8: under 1 %); on a GPU, each of
    this node's ``processes`` gets its share of the CPUs but one, at most 8: one process decodes and
    crops about 160 ImageNet-sized JPEGs a second (BENCHMARKS.md §6c), fewer than one H100
    simulates of vit_small at T = 8 (about 210 a second at batch 64, §3b)."""
    return 0 if not device.startswith("cuda") else max(0, min(8, cpus // processes - 1))


def process_device(device: str) -> str:
    """The device this process evaluates on. Under torchrun, ``cuda`` means the process's own GPU,
    number LOCAL_RANK: processes sharing one GPU would make NCCL's collectives fail."""
    if device != "cuda" or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return device
    local_rank, count = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    if local_rank >= count:
        raise UsageError(
            f"--device cuda: process LOCAL_RANK={local_rank} has no GPU of its own ({count} visible); "
            "start at most one process per GPU"
        )
    torch.cuda.set_device(local_rank)
    return f"cuda:{local_rank}"


def sweep_points(args: argparse.Namespace) -> tuple[str | None, list[tuple[str, dict]]]:
    """The conversions ``eval`` evaluates: the option swept (None: one conversion), and for each
    conversion the name of its totals and files and its ``blocks`` and ``weight_bits``: one per
    --blocks K or per --weight-bits B, of which one may list several values."""
    blocks, bits = args.blocks or [None], args.weight_bits or [None]
    if len(blocks) > 1 and len(bits) > 1:
        raise UsageError("--blocks and --weight-bits both list several values: sweep one at a time")
    over = "blocks" if len(blocks) > 1 else "weight_bits" if len(bits) > 1 else None
    points = []
    for k, b in ((k, b) for k in blocks for b in bits):
        parts = [f"blocks-{k}"] if k is not None else []
        parts += [f"bits-{sweep_label(b)}"] if over == "weight_bits" else []
        # a sweep's "float": every synapse float, whatever --weight-bits-at says of the others
        float_point = {"weight_bits_at": None} if b is None and over == "weight_bits" else {}
        points.append((".".join(parts) or "eval", dict(blocks=k, weight_bits=b, **float_point)))
    return over, points


def evaluation_names(args: argparse.Namespace) -> list[str]:
    """The names under which ``eval`` keeps each evaluation's totals (:func:`sweep_points`)."""
    return ["eval"] if args.snn else [name for name, _ in sweep_points(args)[1]]


def prepare_output(out: Path, resume: bool, force: bool, names: list[str]) -> None:
    """Check ``--out`` for the evaluations ``names``: with ``resume``, it must hold an interrupted
    one's totals, and none of an evaluation this command would not run (they would be lost when it
    ends); otherwise it must be empty (or ``force``), and totals left there are cleared."""
    progress = out / PROGRESS_FOLDER
    if resume:
        saved = sorted({path.name.split(".rank")[0] for path in progress.glob("*.safetensors")})
        if not saved:
            raise UsageError(f"--resume: {out} holds no interrupted evaluation (nothing in {progress})")
        others = [name for name in saved if name not in names]
        if others:
            raise UsageError(
                f"--resume: {progress} holds the totals of {', '.join(others)}, which this command does "
                f"not evaluate (it evaluates {', '.join(names)}): give the interrupted run's --blocks and "
                "--weight-bits (or --snn / --model)"
            )
        return
    if progress.is_dir() and not force:
        raise UsageError(
            f"--out {out}: holds an interrupted evaluation ({progress}); add --resume to continue it, "
            "or --force to start over"
        )
    check_output_dir(out, force)
    shutil.rmtree(progress, ignore_errors=True)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt while inside, as Ctrl-C does: a job scheduler preempting
    the run (SIGTERM, then SIGKILL after a grace period; torchrun passes it on to its processes) then
    leaves the totals of the last whole batch for ``--resume``, where Python's default would exit
    without them. Only the main thread may set signal handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_eval(args: argparse.Namespace) -> int:
    check_eval_args(args)
    parse_spec(args.data, "test")  # fail on a bad spec before any slow work
    if args.calib:
        parse_spec(args.calib, "train")
    if args.snn:
        check_snn_args(args)
    world = init_world(args.device)
    device = process_device(args.device)
    if args.workers is None:
        # the CPUs this process may use (Linux), else the machine's; LOCAL_WORLD_SIZE from torchrun
        affinity = getattr(os, "sched_getaffinity", None)
        cpus = len(affinity(0)) if affinity else os.cpu_count() or 1
        workers = default_workers(device, cpus, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    else:
        workers = args.workers
    settings = EvalSettings.from_args(args, device=device, workers=workers)
    if world.is_main:
        prepare_output(settings.out, args.resume, args.force, evaluation_names(args))
    world.barrier()  # no process saves totals before stale ones are cleared
    try:
        with terminate_as_interrupt():
            evaluate_from_args(args, settings, world)
    except KeyboardInterrupt:
        folder = settings.out / PROGRESS_FOLDER
        if world.is_main and any(folder.glob("*.safetensors")):
            print(f"transpike: interrupted; the totals of the samples done are in {folder}: the same "
                  "command with --resume continues from them", file=sys.stderr)  # fmt: skip
        elif world.is_main:
            print("transpike: interrupted before any totals were saved", file=sys.stderr)
        return 130
    world.barrier()  # every process has read and written its totals
    if world.is_main:
        shutil.rmtree(settings.out / PROGRESS_FOLDER, ignore_errors=True)
    return 0


def evaluate_from_args(args: argparse.Namespace, settings: EvalSettings, world: World) -> None:
    """The evaluations ``eval`` asks for: of a saved network, or of conversions (one per --blocks K
    or --weight-bits B)."""
    if args.snn:
        snn = load(args.snn)
        ann = rebuild_ann(snn)
        name = spec_name(snn.model_spec) if snn.model_spec else str(args.snn)
        dataset = load_dataset(args.data, "test", ann, (snn.model_spec or {}).get("weights"))
        meta = dict(model=name, data=args.data, snn_file=args.snn, command=args.command)
        run_evaluation(snn, ann, dataset, settings, meta, world, name="eval")
        return
    if not args.model:
        raise UsageError("give --snn FILE, or --model NAME with --calib DATA")
    ann, batches, spec, provenance = model_and_calibration(args)
    dataset = load_dataset(args.data, "test", ann, spec.get("weights"))
    meta = dict(model=args.model, data=args.data, snn_file=None, command=args.command)
    sweep, (over, points) = [], sweep_points(args)
    for index, (name, point) in enumerate(points):
        snn = convert(ann, batches, **{**conversion_options(args), **point}, model_spec=spec,
                      provenance=provenance)  # fmt: skip
        last = index == len(points) - 1
        file = file_name(name if over else None)
        results = run_evaluation(snn, ann, dataset, settings, meta, world, last, name, file)
        sweep.append(
            dict(
                **point,
                snn_top1=results["snn_top1"],
                difference_ci95=results["difference_ci95"],
                agreement=results["agreement"],
                rounded_ann_top1=results.get("rounded_ann_top1"),
                energy_ratio=results.get("energy", {}).get("energy_ratio"),
            )
        )
    if over and world.is_main:
        print(format_sweep_table(results["ann_top1"], sweep, over))
        paths = write_results({**results, f"{over}_sweep": sweep}, settings.out)
        print(
            "\nwrote "
            + ", ".join(str(p) for p in paths if p.name in ("results.json", f"accuracy_vs_{over}.png"))
        )


def cmd_trace(args: argparse.Namespace) -> int:
    positive("--time-steps", args.time_steps)
    positive("--samples", args.samples)
    if not args.noise > 0:
        raise UsageError(f"--noise must be > 0, got {args.noise}")
    parse_spec(args.data, "test")  # fail on a bad spec before any slow work
    if args.calib:
        parse_spec(args.calib, "train")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    out = check_output_dir(args.out, args.force)
    if args.snn:
        check_snn_args(args)
        snn = load(args.snn)
        ann, spec = rebuild_ann(snn), snn.model_spec or {}
    elif args.model:
        ann, batches, spec, provenance = model_and_calibration(args)
        snn = convert(ann, batches, **conversion_options(args), blocks=args.blocks, model_spec=spec,
                      provenance=provenance)  # fmt: skip
    else:
        raise UsageError("give --snn FILE, or --model NAME with --calib DATA")
    dataset = load_dataset(args.data, "test", ann, spec.get("weights"))
    chosen = Subset(dataset, spread(len(dataset), args.samples))
    first = next(iter(DataLoader(chosen, batch_size=args.samples)), None)
    if first is None:
        raise UsageError(f"--data {args.data}: holds no samples")
    x = first[0]
    snn.to(args.device)
    result = trace(snn, x, args.time_steps)
    amplified = sensitivity(snn, x, args.noise)
    rounded = rounding(snn, ann.to(args.device), x)
    known = snn.calibration_fingerprints  # traced samples the thresholds were fitted on flatter it
    calibrated = None if known is None else int(torch.isin(fingerprints(x), known).sum())
    print(result.summary())
    print(
        f"\nthe ANN's output error with noise of relative size {args.noise:g} at every MT site's input: "
        f"{amplified:.3g} ({amplified / args.noise:.2g}x the noise)"
    )
    if rounded is not None:
        print(
            f"with its synapses rounded to {rounded['weight_bits']} bits, the ANN the trace compares with is "
            f"{rounded['output_error']:.3g} from the float ANN's output and decides "
            f"{rounded['agreement']:.1f} % as it does"
        )  # fmt: skip
        print("the synaptic layers whose rounding alone moves the ANN's output most (relative error):")
        for row in rounded["layers"][:5]:
            print(f"  {row['path']:<48} {row['output_error']:.3g}")
    if calibrated is not None:  # None: a network saved before its calibration samples were kept
        print(
            f"{calibrated} of the {len(x)} traced samples were calibration samples: the thresholds were "
            "fitted on them"
            if calibrated
            else "none of the traced samples was a calibration sample"
        )  # fmt: skip
    meta = dict(
        command=args.command,
        model=spec_name(spec) if spec else str(args.snn),
        data=args.data,
        samples=len(x),
        calibration_samples=calibrated,
        options=snn.options,
        sensitivity=dict(noise=args.noise, output_error=amplified),
        rounding=rounded,
        transpike=__version__,
    )
    paths = write_trace({**meta, **result.to_dict()}, out)
    print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    info = network_info(args.snn)
    print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0


def cmd_energy(args: argparse.Namespace) -> int:
    prices = energy_prices(args)
    path = Path(args.results)
    path = path / "results.json" if path.is_dir() else path
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable results file of 'transpike eval' ({error})") from error
    if not isinstance(results, dict) or not isinstance(results.get("energy"), dict):
        raise ValueError(f"{path}: no energy section (an evaluation with --no-energy, or not a results file)")
    try:
        report = EnergyReport.from_dict(results["energy"])
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    report = report.priced(**prices)
    sweeps = [key.removesuffix("_sweep") for key in results if key.endswith("_sweep")]
    if sweeps:
        warnings.warn(f"{path}: a --{sweeps[0].replace('_', '-')} sweep's results file holds its last "
                      "evaluation's energy only", UserWarning, stacklevel=2)  # fmt: skip
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.summary())
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    if len(args.runs) < 2:
        raise UsageError("compare: give a reference and at least one evaluation to compare with it")
    if args.classes_at is not None:
        positive("--classes-at", args.classes_at)
    reference, *others = (load_predictions(path) for path in args.runs)
    comparison = compare(reference, others, args.classes_at)
    out = check_output_dir(args.out, args.force) if args.out else None
    print(format_comparison(comparison))
    if out is not None:
        paths = write_comparison({"command": args.command, **comparison}, out)
        print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    positive("--time-steps", args.time_steps)
    out = check_output_dir(args.out, args.force)
    settings = EvalSettings.from_args(
        args, batch_size=256, limit=None, device="cpu", fuse=False, graphs=False, out=out
    )
    start = time.perf_counter()
    with tqdm(
        total=digits.TRAINING["epochs"], desc="train digits ViT (once, then cached)", unit="epoch"
    ) as bar:
        ann = digits.trained_digits_vit(lambda epoch, total: bar.update(epoch - bar.n))
    train, _ = digits.load_digits_split("train")
    spec = {"timm": "vit_tiny_patch16_224", "kwargs": digits.ARCHITECTURE}
    provenance = dict(calibration=dict(data="digits:train", batch_size=256))
    snn = convert(ann, train.split(256), **conversion_options(args), model_spec=spec, provenance=provenance)
    test = load_dataset("digits:test")
    meta = dict(model="transpike digits ViT", data="digits:test", snn_file=str(out / "snn.safetensors"),
                command=args.command)  # fmt: skip
    run_evaluation(snn, ann, test, settings, meta, World())
    save(snn, out / "snn.safetensors", overwrite=True)
    print(f"wrote {out / 'snn.safetensors'}\ndemo finished in {time.perf_counter() - start:.0f} s")
    print(
        "other settings: --threshold mse --rounding nearest --levels-per-octave 4 (one spike per "
        "step) or --neuron burst --threshold mse; --weight-bits 4 for synapses of 4 bits; measured in "
        "BENCHMARKS.md. Run one into another --out OTHER, then 'transpike compare "
        f"{out} OTHER' tells, image by image, whether the two differ; 'transpike energy {out} "
        "--arithmetic int8' prices these spikes on an 8-bit integer chip"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transpike", description="ANN-to-SNN conversion of Vision Transformers"
    )
    parser.add_argument("--version", action="version", version=f"transpike {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train, convert and evaluate a ViT on the built-in digits data")
    demo.add_argument("--out", default="transpike-demo", help="results directory (default ./transpike-demo)")
    demo.add_argument("--time-steps", type=int, default=8)
    demo.add_argument("--force", action="store_true", help="write into a non-empty --out directory")
    add_conversion_args(demo)
    add_energy_args(demo)
    demo.set_defaults(func=cmd_demo)

    conv = commands.add_parser(
        "convert", help="convert a timm or torchvision model and save the spiking network"
    )
    add_model_args(conv, required=True)
    conv.add_argument("--out", required=True, help="spiking network file (.safetensors)")
    conv.add_argument("--force", action="store_true", help="replace an existing --out file")
    conv.add_argument("--blocks", type=int, help="convert only the first K Transformer blocks")
    add_conversion_args(conv)
    conv.set_defaults(func=cmd_convert)

    ev = commands.add_parser("eval", help="accuracy of the ANN and of the SNN at every t <= T")
    ev.add_argument("--snn", help="a network written by 'transpike convert'")
    add_model_args(ev, required=False)
    ev.add_argument("--data", required=True, help=f"evaluation data: {SPEC_HELP} (default split: test)")
    ev.add_argument("--time-steps", type=int, required=True)
    ev.add_argument(
        "--against-ann", action="store_true",
        help="score the SNN against the ANN's top-1 instead of the labels (which are not read): how "
        "faithfully it keeps the ANN's decisions; data without labels (images:PATH, npz without y) is "
        "always scored so",
    )  # fmt: skip
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument(
        "--limit",
        type=int,
        help="evaluate N samples spread evenly over the data (every class of a "
        "class-sorted folder gets its share)",
    )
    ev.add_argument("--device", default="cpu", help="cpu or cuda")
    ev.add_argument(
        "--fuse", action="store_true",
        help="each neuron step as one compiled kernel (torch.compile): same outputs, faster",
    )  # fmt: skip
    ev.add_argument(
        "--graphs", action="store_true",
        help="replay each step as a CUDA graph (with --device cuda and --no-energy): same outputs, faster",
    )  # fmt: skip
    ev.add_argument("--out", required=True, help="results directory")
    ev.add_argument("--force", action="store_true", help="write into a non-empty --out directory")
    ev.add_argument(
        "--resume", action="store_true",
        help="continue the interrupted evaluation whose totals are in --out (the same arguments; "
        "--batch-size and --device may change)",
    )  # fmt: skip
    for kind, kind_type, metavar, rule in EXIT_FLAGS:
        default = [kind_type(r.value) for r in EXITS if r.kind == kind]
        given = " ".join(f"{v:g}" for v in default) + "; the flag alone: none" if default else "none"
        ev.add_argument(
            f"--exit-{kind}", type=kind_type, nargs="*", default=default, metavar=metavar,
            help=f"early exit: also report the accuracy and mean steps when each sample stops at the first t "
            f"where {rule} (default: {given})",
        )  # fmt: skip
    ev.add_argument(
        "--blocks", type=int, nargs="+", metavar="K",
        help="convert only the first K Transformer blocks; several K: accuracy as K grows",
    )  # fmt: skip
    add_conversion_args(ev, sweep=True)
    add_energy_args(ev)
    ev.set_defaults(func=cmd_eval)

    tr = commands.add_parser(
        "trace", help="where the SNN departs from the ANN: every converted module's error at every t"
    )
    tr.add_argument("--snn", help="a network written by 'transpike convert'")
    add_model_args(tr, required=False)
    tr.add_argument("--data", required=True, help=f"inputs: {SPEC_HELP} (default split: test)")
    tr.add_argument(
        "--samples",
        type=int,
        default=8,
        help="trace N samples spread evenly over the data, one batch (default 8)",
    )
    tr.add_argument("--time-steps", type=int, required=True)
    tr.add_argument("--device", default="cpu", help="cpu or cuda")
    tr.add_argument(
        "--noise", type=float, default=0.01,
        help="the ANN's sensitivity: its output error with noise of this relative size at every MT site "
        "(default 0.01)",
    )  # fmt: skip
    tr.add_argument("--out", required=True, help="results directory (trace.json, trace.csv, trace.png)")
    tr.add_argument("--force", action="store_true", help="write into a non-empty --out directory")
    tr.add_argument("--blocks", type=int, help="convert only the first K Transformer blocks")
    add_conversion_args(tr)
    tr.set_defaults(func=cmd_trace)

    cmp = commands.add_parser(
        "compare", help="is one conversion better than another: evaluations compared sample by sample"
    )
    cmp.add_argument(
        "runs", nargs="+", metavar="RUN",
        help="results directories of 'transpike eval' or 'demo' (or their predictions files) on the same "
        "data; the first is the reference",
    )  # fmt: skip
    cmp.add_argument(
        "--classes-at",
        type=int,
        metavar="T",
        help="compare class by class after T steps (default: the last step both reached)",
    )
    cmp.add_argument(
        "--out", help="also write compare.json, compare.csv, compare_classes.csv and compare.png here"
    )
    cmp.add_argument("--force", action="store_true", help="write into a non-empty --out directory")
    cmp.set_defaults(func=cmd_compare)

    energy = commands.add_parser(
        "energy", help="an evaluation's energy at other energies per operation, from its counts (no new run)"
    )
    energy.add_argument(
        "results", metavar="RESULTS", help="results.json of 'transpike eval' or 'demo', or its directory"
    )
    add_price_args(energy)
    energy.add_argument("--json", action="store_true", help="print the energy section, priced so, as JSON")
    energy.set_defaults(func=cmd_energy)

    info = commands.add_parser(
        "info", help="what a saved network is: model, options, calibration data, checkpoint, digest, modules"
    )
    info.add_argument("snn", metavar="SNN_FILE", help="a network written by 'transpike convert' or 'demo'")
    info.add_argument("--json", action="store_true", help="print it as one JSON document")
    info.set_defaults(func=cmd_info)
    return parser


def plain_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the command prints it: what is wrong, not the source line that noticed it."""
    return f"transpike: warning: {message}\n"


def plain_error(error: Exception) -> str:
    """An error as the command prints it: its message, and for one raised while a loading process
    read a sample (which torch raises again with that process's traceback in the message) the
    original message alone."""
    text = str(error)
    if "\nOriginal Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]  # "ValueError: image x.png: cannot be read (...)"
    return last.partition(": ")[2] or last


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # the command line as typed, kept in the result files: what produced them, to run again
    args.command = shlex.join(["transpike", *(sys.argv[1:] if argv is None else argv)])
    formatting = warnings.formatwarning
    if not args.debug:
        warnings.formatwarning = plain_warning
    try:
        return args.func(args)
    except (ValueError, FileExistsError, ConversionError, FusionError, GraphError) as error:
        if args.debug:
            raise
        print(f"transpike: error: {plain_error(error)}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = formatting
