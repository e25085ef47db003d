"""The transpike command: every command, every data spec, errors, and distributed evaluation."""

import json
import os
import pickle
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SIMULATE, interrupt_after
from PIL import Image

import transpike
from transpike import cli, digits
from transpike.data import UNLABELLED, load_dataset
from transpike.evaluate import World, evaluate
from transpike.exits import EXITS
from transpike.io import rebuild_ann
from transpike.model import SpikingModel
from transpike.predictions import load_predictions
from transpike.progress import Progress

MODEL = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=16", "patch_size=4", "embed_dim=24",
         "depth=2", "num_heads=3", "num_classes=4"]  # fmt: skip


@pytest.fixture(autouse=True)
def quick_digits(tmp_path_factory, monkeypatch):
    """A private model cache and a short training run, so tests neither share nor wait."""
    monkeypatch.setenv("TRANSPIKE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setitem(digits.TRAINING, "epochs", 2)


@pytest.fixture
def npz_data(tmp_path):
    """12 random 16 px RGB images with 4 classes, as uint8."""
    gen = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x=gen.integers(0, 256, (12, 3, 16, 16), dtype=np.uint8), y=gen.integers(0, 4, 12))
    return f"npz:{path}"


def run(*argv):
    return cli.main([str(a) for a in argv])


def test_demo_writes_results(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run("demo", "--out", out, "--time-steps", 3) == 0
    results = json.loads((out / "results.json").read_text())
    for key in ("model", "method", "time_steps", "num_samples", "ann_top1", "snn_top1", "options"):
        assert key in results
    assert results["time_steps"] == 3 and len(results["snn_top1"]) == 3
    assert results["num_samples"] == 719
    assert results["command"] == f"transpike demo --out {out} --time-steps 3"  # what produced it, to rerun
    assert (out / "results.csv").read_text().splitlines()[
        0
    ] == "t,snn_top1,ann_top1,difference,snn_top5,ann_top5,difference_ci95,agreement"
    assert Image.open(out / "accuracy.png").size[0] > 100
    assert (out / "snn.safetensors").is_file()
    chosen = load_predictions(out / results["predictions_file"])  # every sample's top-1 after each t
    assert chosen.time_steps == 3 and len(chosen.labels) == 719 and chosen.about["data"] == "digits:test"
    right = (chosen.snn == chosen.labels[:, None]).sum(0).double()
    assert results["snn_top1"] == (100.0 * right / 719).tolist()
    same = (chosen.snn == chosen.ann[:, None]).sum(0).double()  # the SNN's top-1 is the ANN's, right or not
    assert results["agreement"] == (100.0 * same / 719).tolist()
    classes = (out / "classes.csv").read_text().splitlines()  # one line per digit, from the predictions
    assert classes[0].startswith("class,name,samples,ann_top1,snn_top1_t1,snn_top1_t2,snn_top1_t3,difference")
    assert sum(int(line.split(",")[2]) for line in classes[1:]) == 719 and len(classes) == 11
    zero = chosen.labels == 0
    expected = 100.0 * (chosen.snn[zero, -1] == 0).double().mean().item()
    assert classes[1].split(",")[:2] == ["0", ""]  # the digits have no class names
    assert float(classes[1].split(",")[6]) == pytest.approx(expected, abs=1e-4)
    energy = results["energy"]
    assert energy["ann_macs"] > 0 and len(energy["energy_ratio"]) == 3
    assert {"path", "kind", "ann_macs", "snn_acs", "input_firing_rate"} <= set(energy["layers"][0])
    figures = ("energy", "energy_breakdown", "firing_rates", "spike_levels", "early_exit", "accuracy_energy")
    for name in figures:
        assert Image.open(out / f"{name}.png").size[0] > 100
    for name, series in (("layers", ("snn_acs", "input_firing_rate")), ("sites", ("firing_rate",))):
        lines = (out / f"{name}.csv").read_text().splitlines()  # one line per layer / MT site
        assert lines[0].endswith(",".join(f"{key}_t{t}" for key in series for t in (1, 2, 3)))
        assert len(lines) == len(energy[name]) + 1
        for line, row in zip(lines[1:], energy[name], strict=True):
            cells = line.split(",")
            assert cells[0] == row["path"]
            values = [v for key in series for v in row[key]]
            assert [float(c) for c in cells[-len(values) :]] == pytest.approx(values, rel=1e-5)
    exits = (out / "early_exit.csv").read_text().splitlines()
    head = "rule,value,snn_top1,difference,difference_ci95,snn_top5,mean_steps,energy_ratio,"
    head += "energy_ratio_full,agreement"
    assert exits[0] == head + ",exit_t1,exit_t2,exit_t3"
    assert [line.split(",")[:2] for line in exits[1:]] == [[r.kind, f"{r.value:g}"] for r in EXITS]
    rules = [(row["rule"], row["value"]) for row in results["early_exit"]]
    assert rules == [(r.kind, r.value) for r in EXITS]
    printed = capsys.readouterr().out
    assert "SNN top-1" in printed and "ECMT form" in printed and "early exit" in printed
    assert "same top-1 as ANN" in printed
    matched = results["matches_ann_from"]
    assert (f"from t = {matched} on, the 95 %" if matched else "at t = 3 the 95 % interval") in printed


def test_demo_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert run("demo", "--out", out) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "keep"


@pytest.mark.parametrize(
    "method, extra",
    [
        ("ecmt", []),
        ("sit", []),
        ("ecmt", ["--threshold", "mse", "--rounding", "nearest", "--levels-per-octave", 4]),
        ("ecmt", ["--weight-bits", 5, "--weight-granularity", "tensor"]),
    ],
)
def test_convert_then_eval_equals_eval_with_conversion(tmp_path, npz_data, method, extra):
    snn_file = tmp_path / "net.safetensors"
    calibration = [
        "--calib",
        npz_data,
        "--calib-batches",
        2,
        "--calib-batch-size",
        4,
        "--method",
        method,
        *extra,
    ]
    assert run("convert", *MODEL, *calibration, "--out", snn_file) == 0
    assert run("eval", "--snn", snn_file, "--data", npz_data, "--time-steps", 4, "--out", tmp_path / "a") == 0
    argv = ["eval", *MODEL, *calibration, "--data", npz_data, "--time-steps", 4]
    rules = ["--exit-confidence", 0.6, 1, "--exit-entropy", 0.2, "--exit-margin", 0.5, "--exit-stable", 2]
    assert run(*argv, "--out", tmp_path / "b", *rules) == 0
    argv = ["eval", "--snn", snn_file, "--data", npz_data, "--time-steps", 4, "--fuse"]
    assert run(*argv, "--out", tmp_path / "c") == 0
    a, b, c = (json.loads((tmp_path / d / "results.json").read_text()) for d in "abc")
    assert a["snn_top1"] == b["snn_top1"] and a["ann_top1"] == b["ann_top1"]
    assert a["num_samples"] == 12 and a["model"] == "vit_tiny_patch16_224"
    assert a["options"]["method"] == b["options"]["method"] == method
    finer = "--levels-per-octave" in extra
    assert a["options"]["levels_per_octave"] == (4 if finer else 1)
    assert a["options"]["levels"] == (29 if finer else 8)
    bits = "--weight-bits" in extra  # the rounded network's ANN, rebuilt from its file, is the float one
    assert a["options"]["weight_bits"] == b["options"]["weight_bits"] == (5 if bits else None)
    assert c["fused"] and not a["fused"]
    assert (c["snn_top1"], c["energy"]) == (a["snn_top1"], a["energy"])  # same spikes, compiled
    kinds = [(row["rule"], row["value"]) for row in b["early_exit"]]
    assert kinds == [
        ("confidence", 0.6),
        ("confidence", 1.0),
        ("entropy", 0.2),
        ("margin", 0.5),
        ("stable", 2),
    ]
    never = b["early_exit"][1]  # c = 1 is never reached: every sample runs T = 4 steps
    assert never["snn_top1"] == b["snn_top1"][-1] and never["mean_steps"] == 4
    assert b["early_exit"][-1]["exits"][:2] == [0.0, 0.0]  # stable for 2 steps: t* ≥ 3


def test_convert_refuses_existing_file(tmp_path, npz_data, capsys):
    target = tmp_path / "net.safetensors"
    target.write_bytes(b"mine")
    assert run("convert", *MODEL, "--calib", npz_data, "--out", target) == 2
    assert "--force" in capsys.readouterr().err
    assert target.read_bytes() == b"mine"


def test_checkpoint_files(tmp_path, npz_data):
    torch.manual_seed(3)
    from transpike.models import create_model

    model = create_model("vit_tiny_patch16_224", cli.parse_kwargs(MODEL[3:]))
    torch.save({"model": model.state_dict()}, tmp_path / "ckpt.pth")
    from safetensors.torch import save_file

    save_file(model.state_dict(), tmp_path / "ckpt.safetensors")
    results = []
    for ckpt in ("ckpt.pth", "ckpt.safetensors"):
        out = tmp_path / ckpt.replace(".", "-")
        argv = ["eval", *MODEL, "--checkpoint", tmp_path / ckpt, "--calib", npz_data, "--data", npz_data]
        assert run(*argv, "--time-steps", 2, "--out", out) == 0
        results.append(json.loads((out / "results.json").read_text())["snn_top1"])
    assert results[0] == results[1]


def test_torchvision_model_by_name(tmp_path):
    """``--model torchvision:NAME`` builds torchvision's model; ``eval --snn`` rebuilds it from the
    saved network's spec, with the results of converting in ``eval``."""
    gen = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x=gen.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8), y=gen.integers(0, 4, 8))
    data = ["--calib", f"npz:{path}", "--calib-batches", 1, "--calib-batch-size", 8]
    model = ["--model", "torchvision:vit_b_32", "--model-kwargs", "image_size=32", "num_classes=4"]
    assert run("convert", *model, *data, "--out", tmp_path / "net.safetensors") == 0
    evaluate = ["--data", f"npz:{path}", "--time-steps", 2]
    assert run("eval", "--snn", tmp_path / "net.safetensors", *evaluate, "--out", tmp_path / "a") == 0
    assert run("eval", *model, *data, *evaluate, "--out", tmp_path / "b") == 0
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in "ab")
    assert a["model"] == b["model"] == "torchvision:vit_b_32"
    assert a["snn_top1"] == b["snn_top1"] and a["energy"] == b["energy"]


def test_a_timm_model_saved_in_a_directory(tmp_path, npz_data):
    """``--model local-dir:DIR`` (timm's scheme, the layout of the Hub's timm repositories) builds
    the architecture from its config.json with the weights of its model.safetensors and the
    preprocessing it records; ``eval --snn`` rebuilds it from the spec. A directory with pickled
    weights only, one without a timm architecture, and a Hub name are refused by name."""
    from timm.models import save_for_hf

    from transpike.models import create_model

    kwargs = cli.parse_kwargs(MODEL[3:])
    torch.manual_seed(5)
    model = create_model("vit_tiny_patch16_224", kwargs, seed=5)
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": (0.2, 0.3, 0.4)}
    save_for_hf(model, tmp_path / "timm", model_args=kwargs, safe_serialization=True)
    name = f"local-dir:{tmp_path / 'timm'}"
    built = create_model(name)
    assert built.pretrained_cfg["mean"] == [0.2, 0.3, 0.4]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(built(x), model(x))
    data = ["--calib", npz_data, "--data", npz_data, "--time-steps", 2]
    assert run("convert", "--model", name, "--calib", npz_data, "--out", tmp_path / "net.safetensors") == 0
    assert run("eval", "--model", name, *data, "--out", tmp_path / "a") == 0
    assert run("eval", "--snn", tmp_path / "net.safetensors", *data[2:], "--out", tmp_path / "b") == 0
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in "ab")
    assert a["model"] == b["model"] == name and a["snn_top1"] == b["snn_top1"]
    save_for_hf(model, tmp_path / "pickled", model_args=kwargs, safe_serialization=False)
    with pytest.raises(ValueError, match=r"pytorch_model\.bin\), which transpike never reads"):
        create_model(f"local-dir:{tmp_path / 'pickled'}")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"architectures": ["ViTForImageClassification"]}')
    with pytest.raises(ValueError, match=r"names no timm architecture .*read by hf:DIR"):
        create_model(f"local-dir:{tmp_path / 'hf'}")
    with pytest.raises(ValueError, match=r"never downloads.*--local-dir DIR"):
        create_model("hf-hub:timm/vit_tiny_patch16_224.augreg_in21k")


def test_a_timm_model_saved_by_transformers_reads_from_its_directory(tmp_path):
    """transformers' TimmWrapperForImageClassification saves a timm model with its arguments under
    model_args and its weights under timm_model.: local-dir:DIR builds it with those weights (its
    logits are the wrapper's), hf:DIR says so."""
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    from transpike.models import create_model

    config = TimmWrapperConfig(architecture="vit_tiny_patch16_224", num_labels=4, model_args={"img_size": 32})
    torch.manual_seed(1)
    wrapper = TimmWrapperForImageClassification(config).eval()
    wrapper.save_pretrained(tmp_path / "wrapped")
    built = create_model(f"local-dir:{tmp_path / 'wrapped'}")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(built(x), wrapper(pixel_values=x).logits)
    with pytest.raises(
        ValueError, match="a timm model saved by transformers; read its directory with local-dir:"
    ):
        create_model(f"hf:{tmp_path / 'wrapped'}")


def image_folder(root, size=(20, 24)):
    """Two classes of two random RGB images each."""
    gen = np.random.default_rng(2)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(gen.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return f"imagefolder:{root}"


def test_torchvision_weights_give_their_preset_and_come_from_the_hub_cache(tmp_path, monkeypatch):
    """``--weights`` names torchvision weights: images get their preset (ViT-B/32: bilinear, 256
    then 224), the weights come from torch.hub's cache (never downloaded), and a saved network
    keeps the preset for ``eval --snn``."""
    from torchvision.models import get_model, get_weight

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    data = image_folder(tmp_path / "images", size=(40, 60))
    model = ["--model", "torchvision:vit_b_32", "--weights", "IMAGENET1K_V1"]
    convert = ["convert", *model, "--calib", data, "--calib-batches", 1, "--calib-batch-size", 4]
    assert run(*convert, "--out", tmp_path / "net.safetensors") == 2  # not in the cache: refused

    state = get_model("vit_b_32").state_dict()
    state["heads.head.bias"].fill_(0.25)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "vit_b_32-d86f8d99.pth")
    presets = []
    monkeypatch.setattr(cli, "load_dataset", lambda *a: presets.append(a[3]) or load_dataset(*a))
    assert run(*convert, "--out", tmp_path / "net.safetensors") == 0
    snn = transpike.load(tmp_path / "net.safetensors")
    assert snn.model_spec["weights"] == "ViT_B_32_Weights.IMAGENET1K_V1"
    assert torch.equal(snn.ann_state_dict()["heads.head.bias"], state["heads.head.bias"])
    evaluate = ["--data", data, "--time-steps", 1, "--out", tmp_path / "r"]
    assert run("eval", "--snn", tmp_path / "net.safetensors", *evaluate) == 0
    assert presets == ["ViT_B_32_Weights.IMAGENET1K_V1"] * 2

    dataset = load_dataset(data, "test", get_model("vit_b_32"), presets[0])
    image = Image.open(sorted((tmp_path / "images" / "cat").iterdir())[0]).convert("RGB")
    assert torch.equal(dataset[0][0], get_weight(presets[0]).transforms()(image))


@pytest.mark.parametrize(
    "model, weights, message",
    [
        (MODEL, "IMAGENET1K_V1", "only torchvision models take named weights, not the timm model"),
        (["--model", "torchvision:vit_b_32"], "IMAGENET1K_V9", "unknown weights 'IMAGENET1K_V9' for"),
        (["--model", "torchvision:vit_b_32", "--model-kwargs", "image_size=64"], "DEFAULT",
         "their preset makes 224x224 images, the model takes 64x64; build it for theirs"),
        (["--model", "torchvision:swin_t"], "Swin_T_Weights.IMAGENET1K_V1", "not on disk at"),
    ],
)  # fmt: skip
def test_bad_weights_are_named(model, weights, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    data = image_folder(tmp_path / "images")
    argv = ["convert", *model, "--weights", weights, "--calib", data, "--out", tmp_path / "net.safetensors"]
    assert run(*argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "net.safetensors").exists()


def test_loading_workers_change_nothing_but_speed(tmp_path):
    data = image_folder(tmp_path / "images")
    argv = ["eval", *MODEL, "--calib", data, "--calib-batch-size", 3, "--data", data, "--batch-size", 3,
            "--time-steps", 2]  # fmt: skip
    assert run(*argv, "--out", tmp_path / "in-process") == 0
    assert run(*argv, "--workers", 2, "--out", tmp_path / "workers") == 0
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("in-process", "workers"))
    assert one["num_samples"] == two["num_samples"] == 4
    assert one["snn_top1"] == two["snn_top1"] and one["energy"] == two["energy"]
    assert (one["workers"], two["workers"]) == (0, 2)  # none by default on the CPU


def test_default_workers_feed_gpus_and_leave_cpus_to_the_simulation():
    for command in (
        ["eval", "--snn", "x", "--data", "digits", "--time-steps", "1", "--out", "o"],
        ["convert", "--model", "m", "--out", "o"],
    ):
        assert cli.build_parser().parse_args(command).workers is None  # decided by the device
    assert cli.default_workers("cpu", cpus=64, processes=1) == 0
    assert cli.default_workers("cuda", cpus=16, processes=1) == 8  # at most 8
    assert cli.default_workers("cuda:1", cpus=16, processes=4) == 3  # 4 CPUs per GPU, one for itself
    assert cli.default_workers("cuda", cpus=2, processes=4) == 0


def make_cifar(root, hundred: bool, samples: int = 6):
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    gen = np.random.default_rng(1)
    key = "fine_labels" if hundred else "labels"
    names = ["train", "test"] if hundred else [*[f"data_batch_{i}" for i in range(1, 6)], "test_batch"]
    for name in names:
        entry = {"data": gen.integers(0, 256, (samples, 3072), dtype=np.uint8), key: list(range(samples))}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))


@pytest.mark.parametrize(
    "kind", ["digits", "digits:train", "npz-float", "imagefolder", "cifar10", "cifar100"]
)
def test_every_data_spec(kind, tmp_path):
    from transpike.models import create_model

    model = create_model(
        "vit_tiny_patch16_224", dict(img_size=16, patch_size=4, embed_dim=24, depth=1, num_heads=3)
    )
    if kind.startswith("digits"):
        spec, expected = kind, (1078 if kind.endswith("train") else 719, (1, 8, 8))
    elif kind == "npz-float":
        np.savez(tmp_path / "d.npz", x=np.random.rand(5, 9, 9).astype(np.float32), y=np.arange(5))
        spec, expected = f"npz:{tmp_path / 'd.npz'}", (5, (1, 9, 9))
    elif kind == "imagefolder":
        spec, expected = image_folder(tmp_path), (4, (3, 16, 16))
    else:
        make_cifar(tmp_path, kind == "cifar100")
        spec, expected = f"{kind}:{tmp_path}", (6, (3, 16, 16))
    dataset = load_dataset(spec, "test", model)
    x, y = dataset[0]
    assert (len(dataset), tuple(x.shape)) == expected
    assert x.dtype == torch.float32 and int(y) >= 0


def test_npz_without_x_names_the_arrays_it_holds_and_without_y_has_no_labels(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 3, 8, 8), np.float32), labels=np.zeros(2, np.int64))
    message = r"d\.npz: needs an array 'x' \(images; 'y', labels, if known\), found 'images', 'labels'"
    with pytest.raises(ValueError, match=message):
        load_dataset(f"npz:{tmp_path / 'd.npz'}", "test", torch.nn.Identity())
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 3, 8, 8), np.float32))
    assert load_dataset(f"npz:{tmp_path / 'x.npz'}", "test").tensors[1].tolist() == [UNLABELLED] * 2


def test_eval_scores_data_without_labels_against_the_ann(tmp_path, npz_data, capsys):
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(2).random((5, 3, 16, 16), dtype=np.float32))
    argv = ["eval", *MODEL, "--calib", npz_data, "--data", f"npz:{tmp_path / 'x.npz'}", "--time-steps", 2,
            "--no-energy"]  # fmt: skip
    assert run(*argv, "--out", tmp_path / "a") == 0  # no --against-ann: the data has no labels
    assert "scored against the ANN's own top-1, not labels" in capsys.readouterr().out
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["ann_top1"] == 100.0 and results["scored_against"] == "ann"


def test_cifar_pickle_payload_is_refused(tmp_path):
    make_cifar(tmp_path, hundred=False)
    marker = tmp_path / "pwned"
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(
        b"cposix\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    )
    with pytest.raises(ValueError, match=r"refusing to load posix\.system"):
        load_dataset(f"cifar10:{tmp_path}", "test", torch.nn.Identity())
    assert not marker.exists()


EVAL = ["--data", "digits", "--time-steps", "2"]
CALIB = ["--calib", "digits"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "--snn", "missing.safetensors", *EVAL], "missing.safetensors"),
        (["eval", *MODEL, "--calib", "npz:/no/such/file.npz", *EVAL], "/no/such"),
        (["eval", "--model", "vit_nonexistent", *CALIB, *EVAL], "unknown timm model 'vit_nonexistent'"),
        (["eval", *MODEL, "bogus", *CALIB, *EVAL], "bogus"),
        (["eval", *MODEL, "depth=oops", *CALIB, *EVAL], "depth"),
        (
            ["eval", "--snn", "x", "--data", "mnist:/tmp", "--time-steps", "2"],
            "unknown data spec 'mnist:/tmp'",
        ),
        (["eval", *MODEL, *CALIB, "--data", "digits", "--time-steps", "0"], "--time-steps"),
        (["eval", *MODEL, "--checkpoint", "nope.pth", *CALIB, *EVAL], "nope.pth"),
        (["eval", *MODEL, "--checkpoint", __file__, *CALIB, *EVAL], "cannot be read safely"),  # not torch
        (["convert", *MODEL, "--out", "x.safetensors"], "--calib"),
        (["eval", "--snn", "x", "--levels", "4", "--no-compensation", *EVAL], "--levels, --no-compensation:"),
        (["eval", "--snn", "x", "--levels-per-octave", "2", *EVAL], "--levels-per-octave: x is a converted"),
        (["eval", *MODEL, *CALIB, "--levels-per-octave", "0", *EVAL], "levels_per_octave must be an integer"),
        (["eval", "--snn", "x", "--method", "sit", "--non-strict", *EVAL], "--method, --non-strict:"),
        (["eval", "--snn", "x", *MODEL, *CALIB, *EVAL], "--model, --model-kwargs, --calib: x is a converted"),
        (["eval", "--snn", "x", "--weights", "DEFAULT", *EVAL], "--weights: x is a converted"),
        (["eval", "--snn", "x", "--calib-batch-size", "8", *EVAL], "--calib-batch-size: x is a converted"),
        (["eval", *MODEL, *CALIB, "--calib-batch-size", "0", *EVAL], "--calib-batch-size must be >= 1"),
        (["eval", "--snn", "x", "--workers", "-1", *EVAL], "--workers must be >= 0, got -1"),
        (["eval", "--snn", "x", "--e-ac", "-1", *EVAL], "--e-ac = -1.0: the energy of one operation"),
        (["energy", "missing.json"], "missing.json: not a readable results file of 'transpike eval'"),
        (["energy", "x", "--e-mac", "-3"], "--e-mac = -3.0: the energy of one operation"),
        (["eval", "--snn", "x", "--arithmetic", "int8", "--e-float", "nan", *EVAL], "--e-float = nan"),
        (["demo", "--e-mac", "inf", "--out", "d"], "--e-mac = inf"),
        (["eval", "--snn", "x", "--exit-confidence", "0.9", "0", *EVAL], "--exit-confidence: early-exit"),
        (
            ["eval", "--snn", "x", "--exit-entropy", "1.5", *EVAL],
            "--exit-entropy: early-exit entropy thresholds must lie in [0, 1]",
        ),
        (
            ["eval", "--snn", "x", "--exit-stable", "0", *EVAL],
            "--exit-stable: early-exit stable thresholds must be whole",
        ),
    ],
)
def test_errors_are_one_line_with_status_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(*argv, *(["--out", "results"] if argv[0] == "eval" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and err.startswith("transpike: error:")


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(ValueError, match="unknown data spec"):
        run("--debug", "eval", "--snn", "x", "--data", "nope", "--time-steps", 2, "--out", tmp_path / "r")


def test_cuda_device(tmp_path, npz_data, capsys):
    argv = ["eval", *MODEL, "--calib", npz_data, "--data", npz_data, "--time-steps", 2, "--device", "cuda"]
    status = run(*argv, "--out", tmp_path / "r")
    graphed = run(*argv, "--graphs", "--no-energy", "--out", tmp_path / "g")
    if torch.cuda.is_available():
        assert status == graphed == 0
        r, g = (json.loads((tmp_path / d / "results.json").read_text()) for d in "rg")
        assert r["device"] == "cuda" and g["graphs"] and not r["graphs"]
        assert g["snn_top1"] == r["snn_top1"]
    else:
        assert status == graphed == 2
        assert capsys.readouterr().err.count("no CUDA device") == 2


def test_graphs_need_a_gpu_and_no_spike_counts(tmp_path, npz_data, capsys):
    argv = ["eval", *MODEL, "--calib", npz_data, "--data", npz_data, "--time-steps", 2, "--graphs"]
    assert run(*argv, "--no-energy", "--out", tmp_path / "a") == 2
    assert "--graphs: CUDA graphs need --device cuda, not cpu" in capsys.readouterr().err
    assert run(*argv, "--device", "cuda", "--out", tmp_path / "b") == 2
    assert "add --no-energy" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_torchrun_gives_each_process_its_own_gpu(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert cli.process_device("cuda") == "cuda" and not chosen  # one process: as given
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert cli.process_device("cuda") == "cuda:1" and chosen == [1]
    assert cli.process_device("cuda:0") == "cuda:0" and cli.process_device("cpu") == "cpu"  # as given
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match="LOCAL_RANK=2 has no GPU of its own"):
        cli.process_device("cuda")


def test_torchrun_two_processes_match_one(tmp_path, npz_data):
    common = [
        *MODEL,
        "--calib",
        npz_data,
        "--calib-batches",
        2,
        "--calib-batch-size",  # 10 of the 12 evaluated samples calibrate: counted by both processes
        5,
        "--batch-size",
        4,
        "--data",
        npz_data,
        "--time-steps",
        3,
        "--method",  # SIT: MT sites, products and spiking softmaxes all summed across processes
        "sit",
        "--sit-norm-spikes",
        4096,
    ]
    assert run("eval", *common, "--out", tmp_path / "single") == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517"]
    subprocess.run([*launch, "-m", "transpike", "eval", *map(str, common), "--out", str(tmp_path / "dist")],
                   check=True, env=env, capture_output=True, timeout=300)  # fmt: skip
    single, dist = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("single", "dist"))
    one, two = (load_predictions(tmp_path / d) for d in ("single", "dist"))  # gathered in sample order
    assert all(torch.equal(getattr(one, k), getattr(two, k)) for k in ("labels", "ann", "snn", "calibration"))
    assert dist["processes"] == 2 and dist["num_samples"] == single["num_samples"] == 12
    assert dist["calibration_samples"] == single["calibration_samples"] == int(one.calibration.sum()) == 10
    assert dist["snn_top1"] == single["snn_top1"] and dist["ann_top1"] == single["ann_top1"]
    assert dist["difference_ci95"] == single["difference_ci95"]
    for one, two in zip(single["early_exit"], dist["early_exit"], strict=True):
        assert one.pop("energy_ratio") == pytest.approx(two.pop("energy_ratio"))  # sums in another order
        assert one == two
    for key in ("energy_ratio", "energy_ratio_full", "energy_ratio_sit", "snn_acs", "softmax_acs"):
        assert dist["energy"][key] == pytest.approx(single["energy"][key])
    assert dist["energy"]["level_histogram"] == single["energy"]["level_histogram"]
    for one, two in zip(single["energy"]["sites"], dist["energy"]["sites"], strict=True):
        assert one["firing_rate"] == pytest.approx(two["firing_rate"])
    assert single["options"]["sit_norm_spikes"] == 4096
    for one, two in zip(single["energy"]["softmaxes"], dist["energy"]["softmaxes"], strict=True):
        assert (one["path"], one["elements"]) == (two["path"], two["elements"])
        for key in ("si_exp_spikes", "si_norm_spikes", "acs"):  # approx takes no nested dicts
            assert one[key] == pytest.approx(two[key])


def test_weight_bits_sweep(tmp_path, npz_data, capsys):
    """--weight-bits with several values: one conversion each, its own predictions and per-class
    files, a table and a plot of top-1 against the bits; "float" is the unrounded conversion."""
    out = tmp_path / "bits"
    argv = ["eval", *MODEL, "--calib", npz_data, "--data", npz_data, "--time-steps", 2]
    assert run(*argv, "--weight-bits", "float", 6, 3, "--weight-bits-at", "head=8", "--out", out) == 0
    results = json.loads((out / "results.json").read_text())
    sweep = results["weight_bits_sweep"]
    assert [row["weight_bits"] for row in sweep] == [None, 6, 3]
    assert sweep[0]["rounded_ann_top1"] is None and 0 <= sweep[2]["rounded_ann_top1"] <= 100
    assert results["rounded_ann_top1"] == sweep[2]["rounded_ann_top1"]  # the last conversion's
    assert results["options"]["weight_bits"] == 3  # the last conversion's, as its table
    assert run(*argv, "--out", tmp_path / "float") == 0  # the same as the sweep's "float" point
    assert sweep[0]["snn_top1"] == json.loads((tmp_path / "float" / "results.json").read_text())["snn_top1"]
    assert Image.open(out / "accuracy_vs_weight_bits.png").size[0] > 100
    for bits, name in ((None, "float"), (6, "6"), (3, "3")):  # the head at 8 bits, but at "float"
        options = load_predictions(out / f"predictions.bits-{name}.safetensors").about["options"]
        assert options["weight_bits"] == bits
        assert options["weight_bits_at"] == (None if bits is None else {"head": 8})
        assert (out / f"classes.bits-{name}.csv").is_file()
    printed = capsys.readouterr().out
    assert "   same top-1 as ANN   ANN with rounded weights" in printed
    assert re.search(r"\n +float +[\d.]+ %", printed) and "accuracy_vs_weight_bits.png" in printed
    with pytest.warns(UserWarning, match="a --weight-bits sweep's results file holds its last evaluation's"):
        assert run("energy", out) == 0  # the last evaluation's, said so
    assert "energy SNN/ANN" in capsys.readouterr().out
    assert run(*argv, "--blocks", 1, 2, "--weight-bits", 8, 4, "--out", tmp_path / "both") == 2
    assert "--blocks and --weight-bits both list several values" in capsys.readouterr().err
    assert run("eval", "--snn", "x.safetensors", "--data", npz_data, "--time-steps", 2, "--weight-bits", 8,
               "--out", tmp_path / "snn") == 2  # fmt: skip
    assert "--weight-bits" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(*argv, "--weight-bits", "eight", "--out", tmp_path / "bad")
    assert "expected an integer or 'float', got 'eight'" in capsys.readouterr().err
    assert run(*argv, "--weight-bits-at", "head=8", "--out", tmp_path / "alone") == 2  # without --weight-bits
    assert (
        "weight_bits_at sets some layers' bits apart from weight_bits: give weight_bits"
        in capsys.readouterr().err
    )
    for bad, said in (("head", "expected PATH=B pairs, got head"), ("head=8bit", "got '8bit'")):
        with pytest.raises(SystemExit):
            run(*argv, "--weight-bits", 4, "--weight-bits-at", bad, "--out", tmp_path / "bad")
        assert said in capsys.readouterr().err


def test_blocks_sweep_and_sit_method(tmp_path, npz_data, capsys):
    out = tmp_path / "sweep"
    argv = ["eval", *MODEL, "--calib", npz_data, "--data", npz_data, "--time-steps", 2, "--method", "sit",
            "--sit-norm-spikes", "auto"]  # fmt: skip
    assert run(*argv, "--blocks", 0, 1, 2, "--out", out) == 0
    results = json.loads((out / "results.json").read_text())
    assert [row["blocks"] for row in results["blocks_sweep"]] == [0, 1, 2]
    assert results["blocks_sweep"][0]["snn_top1"] == [results["ann_top1"]] * 2  # nothing converted
    # no sample differs: 1/2 in each cell of the paired table of 12 + 2 leaves ± 1.96/14
    assert results["blocks_sweep"][0]["difference_ci95"] == [pytest.approx(196 / 14)] * 2
    assert results["options"]["method"] == "sit" and results["options"]["blocks"] == 2
    assert results["options"]["sit_norm_spikes"] is None  # auto: from the row length
    assert Image.open(out / "accuracy_vs_blocks.png").size[0] > 100
    for blocks in (0, 1, 2):  # one predictions file and one per-class table per K
        chosen = load_predictions(out / f"predictions.blocks-{blocks}.safetensors")
        assert chosen.about["options"]["blocks"] == blocks
        assert (out / f"classes.blocks-{blocks}.csv").is_file()
    assert "blocks   SNN top-1 at T   vs ANN, 95 % interval   same top-1 as ANN" in capsys.readouterr().out
    assert run("eval", "--snn", "x.safetensors", "--data", npz_data, "--time-steps", 2, "--blocks", 1,
               "--out", tmp_path / "r") == 2  # fmt: skip


def results_of(out, resumed=0):
    """results.json of ``out`` but for the run's own time and command line, checking how many
    samples it resumed from."""
    results = json.loads((out / "results.json").read_text())
    assert results.pop("resumed_samples") == resumed
    results.pop("seconds"), results.pop("command"), results["provenance"].pop("command")
    return results


def test_eval_resume(tmp_path, npz_data, monkeypatch, capsys):
    # one calibration batch of --calib-batch-size: the evaluation's --batch-size does not make the network
    argv = ["eval", *MODEL, "--calib", npz_data, "--calib-batches", 1, "--calib-batch-size", 5,
            "--data", npz_data, "--batch-size", 4, "--time-steps", 3]  # fmt: skip
    assert run(*argv, "--out", tmp_path / "whole") == 0
    out = tmp_path / "stopped"
    interrupt_after(monkeypatch, 1)
    assert run(*argv, "--out", out) == 130
    assert "the same command with --resume continues" in capsys.readouterr().err
    assert (out / "progress" / "eval.rank0.safetensors").is_file() and not (out / "results.json").exists()
    refusals = [
        ([], "holds an interrupted evaluation .*add --resume to continue it, or --force to start over"),
        (["--resume", "--force"], "--resume continues an interrupted evaluation, --force starts over"),
        (["--resume", "--time-steps", 4], "time_steps 3 there, 4 here"),
        (["--resume", "--percentile", 99.9], "network '[0-9a-f]+' there"),
    ]
    for extra, message in refusals:
        assert run(*argv, "--out", out, *extra) == 2
        assert re.search(message, capsys.readouterr().err)
    seen = interrupt_after(monkeypatch, 100)
    assert run(*argv, "--out", out, "--resume", "--batch-size", 8) == 0
    assert seen == [8]  # the 8 samples after the first batch of 4
    assert results_of(out, 4) == results_of(tmp_path / "whole") and not (out / "progress").exists()
    assert torch.equal(load_predictions(out).snn, load_predictions(tmp_path / "whole").snn)
    assert "12 samples (4 of them counted by the interrupted run)" in capsys.readouterr().out
    assert run(*argv, "--out", tmp_path / "empty", "--resume") == 2
    assert "holds no interrupted evaluation" in capsys.readouterr().err

    def stopped_converting(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "convert", stopped_converting)
    assert run(*argv, "--out", tmp_path / "early") == 130
    assert "interrupted before any totals were saved" in capsys.readouterr().err


def test_a_resumed_blocks_sweep_skips_the_finished_evaluations(tmp_path, npz_data, monkeypatch, capsys):
    argv = ["eval", *MODEL, "--calib", npz_data, "--data", npz_data, "--batch-size", 4, "--time-steps", 2,
            "--blocks", 1, 2]  # fmt: skip
    assert run(*argv, "--out", tmp_path / "whole") == 0
    out = tmp_path / "stopped"
    interrupt_after(monkeypatch, 4)  # blocks=1 done (3 batches), one batch of blocks=2
    assert run(*argv, "--out", out) == 130
    assert sorted(p.name for p in (out / "progress").iterdir()) == [
        "blocks-1.rank0.safetensors", "blocks-2.rank0.safetensors"
    ]  # fmt: skip
    seen = interrupt_after(monkeypatch, 100)
    for fewer in (argv[:-1], [*argv[:-2], 2]):  # the totals of a K it would not evaluate are kept
        assert run(*fewer, "--out", out, "--resume") == 2
        assert re.search(r"holds the totals of blocks-\d, which this command does not evaluate",
                         capsys.readouterr().err)  # fmt: skip
    assert run(*argv[:-3], "--weight-bits", 8, 4, "--out", out, "--resume") == 2  # bits-8, bits-4: not these
    assert "holds the totals of blocks-1, blocks-2, which this command does not" in capsys.readouterr().err
    assert len(list((out / "progress").iterdir())) == 2 and seen == []
    assert run(*argv, "--out", out, "--resume") == 0
    assert seen == [4, 4]  # blocks=2's last two batches only
    assert results_of(out, 4) == results_of(tmp_path / "whole")


def test_torchrun_resumes_each_process_from_its_own_totals(tmp_path, npz_data, monkeypatch):
    snn_file = tmp_path / "net.safetensors"
    assert run("convert", *MODEL, "--calib", npz_data, "--out", snn_file) == 0
    argv = ["eval", "--snn", snn_file, "--data", npz_data, "--batch-size", 2, "--time-steps", 3]
    assert run(*argv, "--out", tmp_path / "whole") == 0
    # two processes stopped after their first batch: each process's totals, as torchrun's would be
    out = tmp_path / "stopped"
    snn = transpike.load(snn_file)
    ann = rebuild_ann(snn)
    dataset = load_dataset(npz_data, "test", ann)
    for rank in (0, 1):
        interrupt_after(monkeypatch, 1)
        store = Progress(out / "progress", "eval", dict(data=npz_data), resume=False)
        with pytest.raises(KeyboardInterrupt):
            evaluate(
                snn,
                ann,
                dataset,
                3,
                batch_size=2,
                world=World(rank, 2),
                progress=False,
                store=store,
                predictions=True,
            )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29518"]
    subprocess.run([*launch, "-m", "transpike", *map(str, argv), "--out", str(out), "--resume"],
                   check=True, env=env, capture_output=True, timeout=300)  # fmt: skip
    resumed, whole = results_of(out, 4), results_of(tmp_path / "whole")  # 2 + 2 samples in the totals
    assert resumed["processes"] == 2 and resumed["num_samples"] == 12
    assert resumed["snn_top1"] == whole["snn_top1"] and resumed["ann_top1"] == whole["ann_top1"]
    assert resumed["energy"]["level_histogram"] == whole["energy"]["level_histogram"]
    assert resumed["energy"]["snn_acs"] == pytest.approx(whole["energy"]["snn_acs"])
    assert not (out / "progress").exists()
    one, two = load_predictions(out), load_predictions(tmp_path / "whole")  # gathered from both processes
    assert all(torch.equal(getattr(one, k), getattr(two, k)) for k in ("labels", "ann", "snn"))


def test_sigterm_stops_eval_as_ctrl_c_does(tmp_path, npz_data, monkeypatch, capsys):
    """A scheduler preempting the job (SIGTERM) leaves the totals of the last whole batch."""
    calls = []

    def terminated(self, x, time_steps):
        calls.append(len(x))
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # handled before the batch ends
        return SIMULATE(self, x, time_steps)

    monkeypatch.setattr(SpikingModel, "simulate", terminated)
    argv = ["eval", *MODEL, "--calib", npz_data, "--data", npz_data, "--batch-size", 4, "--time-steps", 2]
    assert run(*argv, "--out", tmp_path / "out") == 130
    assert "--resume continues" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
    seen = interrupt_after(monkeypatch, 100)
    assert run(*argv, "--out", tmp_path / "out", "--resume") == 0
    assert (
        seen == [4, 4] and json.loads((tmp_path / "out" / "results.json").read_text())["resumed_samples"] == 4
    )


def test_compare_tells_two_conversions_apart_sample_by_sample(tmp_path, npz_data, capsys):
    argv = ["eval", *MODEL, "--calib", npz_data, "--data", npz_data, "--time-steps", 3]
    assert run(*argv, "--out", tmp_path / "paper") == 0
    assert run(*argv, "--threshold", "mse", "--rounding", "nearest", "--out", tmp_path / "mse") == 0
    capsys.readouterr()
    assert run("compare", tmp_path / "paper", tmp_path / "mse" / "predictions.safetensors", "--out",
               tmp_path / "cmp") == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "options that differ: rounding 'greedy' -> 'nearest', threshold 'percentile' -> 'mse'" in printed
    assert "ANN: the same top-1 for every sample" in printed
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert result["command"].startswith("transpike compare ") and result["command"].endswith(
        " --out " + str(tmp_path / "cmp")
    )
    paper, mse = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("paper", "mse"))
    rows = result["comparisons"][0]["rows"]
    assert [row["first_top1"] for row in rows] == pytest.approx(paper["snn_top1"])
    assert [row["second_top1"] for row in rows] == pytest.approx(mse["snn_top1"])
    assert all(0.0 < row["p_value"] <= row["p_holm"] <= 1.0 for row in rows)
    assert [row["second_energy"] for row in rows] == pytest.approx(mse["energy"]["energy_ratio_full"])
    assert "energy/ANN (full form)" in printed
    lines = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()
    assert lines[0].startswith("reference,other,t,first_top1,second_top1,difference") and len(lines) == 4
    assert lines[0].endswith(",first_agreement,second_agreement,agreement_p_value")
    kept = result["comparisons"][0]["agreement"]  # each run's agreement with the ANN, as eval counted it
    assert [row["first_top1"] for row in kept] == pytest.approx(paper["agreement"])
    assert [row["second_top1"] for row in kept] == pytest.approx(mse["agreement"])
    assert "same top-1 as the ANN at t = 3: " in printed
    assert "per class at t = 3: none of the" in printed  # 12 samples of 4 classes: too few for any
    lines = (tmp_path / "cmp" / "compare_classes.csv").read_text().splitlines()
    assert lines[0] == ("reference,other,t,class,name,samples,first_top1,second_top1,difference,first_only,"
                        "second_only,p_value,p_holm")  # fmt: skip
    assert len(lines) == 1 + len(result["comparisons"][0]["classes"]["classes"])
    assert Image.open(tmp_path / "cmp" / "compare.png").size[0] > 100
    # one run, a non-empty --out, and another data set are refused by name
    assert run("compare", tmp_path / "paper") == 2
    assert "give a reference and at least one evaluation" in capsys.readouterr().err
    assert run("compare", tmp_path / "paper", tmp_path / "mse", "--out", tmp_path / "cmp") == 2
    assert "--force" in capsys.readouterr().err
    other = tmp_path / "other.npz"
    gen = np.random.default_rng(1)
    np.savez(other, x=gen.integers(0, 256, (12, 3, 16, 16), dtype=np.uint8), y=gen.integers(0, 4, 12))
    elsewhere = ["eval", *MODEL, "--calib", npz_data, "--data", f"npz:{other}", "--time-steps", 2]
    assert run(*elsewhere, "--no-energy", "--out", tmp_path / "elsewhere") == 0
    capsys.readouterr()
    assert run("compare", tmp_path / "paper", tmp_path / "elsewhere") == 2
    assert "the labels differ at" in capsys.readouterr().err


def test_arithmetic_sets_the_energy_per_operation_and_compare_names_it(tmp_path, npz_data, capsys):
    """--arithmetic int8 prices the same spikes at 0.3 pJ per MAC, 0.1 per AC (here --e-ac 0.05
    overrides it) and 4.6 per float op; compare names the prices two runs differ in."""
    argv = ["eval", *MODEL, "--calib", npz_data, "--data", npz_data, "--time-steps", 3]
    assert run(*argv, "--out", tmp_path / "fp32") == 0
    assert run(*argv, "--arithmetic", "int8", "--e-ac", 0.05, "--out", tmp_path / "int8") == 0
    fp32, int8 = (json.loads((tmp_path / d / "results.json").read_text())["energy"] for d in ("fp32", "int8"))
    assert [fp32[k] for k in ("e_mac_pj", "e_ac_pj", "e_float_pj")] == [4.6, 0.9, 4.6]
    assert [int8[k] for k in ("e_mac_pj", "e_ac_pj", "e_float_pj")] == [0.3, 0.05, 4.6]
    assert int8["snn_acs"] == fp32["snn_acs"]  # the same spikes, other prices
    scale = (0.05 / 0.3) / (0.9 / 4.6)
    assert int8["energy_ratio"] == pytest.approx([r * scale for r in fp32["energy_ratio"]])
    ann = 0.3 * int8["ann_macs"] + 4.6 * int8["ann_float_ops"]
    assert int8["ann_energy_pj"] == pytest.approx(ann)
    assert int8["energy_ratio_full"] == pytest.approx([e / ann for e in int8["snn_energy_pj"]])
    assert "0.3 pJ per MAC, 0.05 per AC, 4.6 per float op" in capsys.readouterr().out
    assert run("compare", tmp_path / "fp32", tmp_path / "int8", "--out", tmp_path / "cmp") == 0
    assert "options that differ: e_ac_pj 0.9 -> 0.05, e_mac_pj 4.6 -> 0.3" in capsys.readouterr().out
    # the fp32 run's counts priced again, without a new run: what the int8 run reported
    assert run("energy", tmp_path / "fp32", "--arithmetic", "int8", "--e-ac", 0.05, "--json") == 0
    repriced = json.loads(capsys.readouterr().out)
    for key in ("energy_ratio", "energy_ratio_full", "energy_ratio_sit", "snn_energy_pj", "breakdown_pj"):
        assert repriced[key] == pytest.approx(int8[key])
    assert run("energy", tmp_path / "fp32" / "results.json", "--arithmetic", "int8") == 0
    assert "at 0.3 pJ per MAC, 0.1 per AC, 4.6 per float op" in capsys.readouterr().out
    # a file without counts is named: evaluated without energy, or from before they were kept
    assert run(*argv, "--no-energy", "--out", tmp_path / "none") == 0
    capsys.readouterr()
    assert run("energy", tmp_path / "none") == 2
    assert "results.json: no energy section (an evaluation with --no-energy" in capsys.readouterr().err
    old = json.loads((tmp_path / "fp32" / "results.json").read_text())
    del old["energy"]["neurons"], old["energy"]["sit_acs"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert run("energy", tmp_path / "old.json") == 2
    lacks = "old.json: the energy section lacks neurons, sit_acs: written by an earlier transpike"
    assert lacks in capsys.readouterr().err
