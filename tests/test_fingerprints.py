"""Calibration samples met in an evaluation: fingerprints kept by convert, saved, and counted."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import tiny_vit
from safetensors.torch import load_file, save_file
from torch.utils.data import TensorDataset

import transpike
from transpike import cli
from transpike.compare import compare, differing_options
from transpike.evaluate import evaluate
from transpike.fingerprints import WithFingerprints, fingerprints, set_digest
from transpike.info import format_info, network_info
from transpike.io import FINGERPRINTS, read_header
from transpike.predictions import load_predictions, save_predictions
from transpike.results import format_table


def test_a_fingerprint_is_the_samples_values_whatever_its_batch_or_dtype():
    x = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    prints = fingerprints(x)
    assert prints.dtype == torch.int64 and prints.shape == (5,) and len(set(prints.tolist())) == 5
    assert torch.equal(fingerprints(x[3:]), prints[3:])  # another batch
    assert torch.equal(fingerprints(x.double()), prints)  # another dtype, the same float32 values
    assert torch.equal(fingerprints(x.transpose(2, 3).contiguous().transpose(2, 3)), prints)  # another layout
    nudged = x.clone()
    nudged[2, 1, 0, 0] = torch.nextafter(nudged[2, 1, 0, 0], torch.tensor(9.0))  # one value, one ulp
    assert (fingerprints(nudged) != prints).tolist() == [False, False, True, False, False]
    data = WithFingerprints(TensorDataset(nudged, torch.arange(5)))
    assert [torch.isin(data[i][2], prints).item() for i in range(5)] == [True, True, False, True, True]
    assert len(data) == 5 and data[3][1] == 3 and torch.equal(data[3][0], x[3])
    assert fingerprints(x[:0]).shape == (0,) and fingerprints(torch.arange(3.0)).shape == (3,)
    # the set's name: any order, the same; one sample more or less, another
    assert set_digest(prints) == set_digest(prints.flip(0)) != set_digest(prints[1:])
    assert len(set_digest(prints)) == 16


@pytest.fixture
def part_calibrated(images):
    """A tiny ViT converted on 9 of 20 evaluation samples (in two batches), with the ANN and data."""
    model = tiny_vit(num_classes=10)
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(20, 3, 16, 16, generator=gen), torch.randint(0, 10, (20,), generator=gen)
    chosen = [1, 2, 5, 8, 13, 3, 19, 0, 4]
    snn = transpike.convert(model, [x[chosen[:5]], x[chosen[5:]], images[0]], max_batches=2)
    return snn, model, TensorDataset(x, y), chosen


def test_convert_keeps_one_fingerprint_per_calibration_sample_used(part_calibrated):
    snn, _, data, chosen = part_calibrated
    assert torch.equal(snn.calibration_fingerprints, fingerprints(data.tensors[0][chosen]))  # max_batches=2
    assert snn.provenance["calibration"]["samples"] == 9
    assert torch.equal(snn.parallel().calibration_fingerprints, snn.calibration_fingerprints)


def test_evaluate_counts_and_marks_the_calibration_samples_it_meets(part_calibrated):
    snn, model, data, chosen = part_calibrated
    with pytest.warns(UserWarning, match="9 of the 20 evaluated samples were calibration samples"):
        results = evaluate(snn, model, data, 2, batch_size=6, progress=False, energy=False, predictions=True)
    assert results["calibration_samples"] == 9
    marks = results["predictions"]["calibration"]
    assert marks.dtype == torch.int32 and marks.nonzero().flatten().tolist() == sorted(chosen)
    table = format_table(results)
    assert "9 of these samples were calibration samples: the thresholds were fitted on them" in table
    # beside, the figures on the 11 samples kept apart from calibration
    rows, apart = results["predictions"], marks == 0
    snn_right = (rows["snn"][apart] == rows["labels"][apart, None]).double().mean(0) * 100
    assert results["kept_apart"] == dict(
        samples=11,
        ann_top1=pytest.approx(100 * (rows["ann"][apart] == rows["labels"][apart]).double().mean().item()),
        snn_top1=pytest.approx(snn_right.tolist()),
    )
    ann_top1, snn_top1 = results["kept_apart"]["ann_top1"], results["kept_apart"]["snn_top1"][-1]
    assert f"on the other 11 alone: ANN top-1 {ann_top1:.2f} %, SNN {snn_top1:.2f} % after t = 2" in table
    # limit=7: samples 0, 2, 5, 8, 11, 14 and 17 (spread evenly), the first four calibration samples
    with pytest.warns(UserWarning, match="4 of the 7 evaluated"):
        results = evaluate(snn, model, data, 1, limit=7, progress=False, energy=False)
    assert results["calibration_samples"] == 4 and "kept_apart" not in results  # needs the predictions
    # hashed in a loading process, the same
    with pytest.warns(UserWarning, match="4 of the 7 evaluated"):
        loaded = evaluate(snn, model, data, 1, limit=7, progress=False, energy=False, workers=1)
    assert loaded["snn_top1"] == results["snn_top1"] and loaded["calibration_samples"] == 4


def test_a_network_without_fingerprints_counts_nothing(part_calibrated, recwarn):
    snn, model, data, _ = part_calibrated
    snn.calibration_fingerprints = None  # a network saved before they were kept
    results = evaluate(snn, model, data, 1, progress=False, energy=False, predictions=True)
    assert results["calibration_samples"] is None and "calibration" not in results["predictions"]
    assert "calibration sample" not in format_table(results) and not recwarn.list
    held_out = transpike.convert(model, data.tensors[0][:4] + 1)
    results = evaluate(held_out, model, data, 1, progress=False, energy=False)
    assert results["calibration_samples"] == 0 and not recwarn.list
    assert format_table(results).endswith("none of these samples was a calibration sample")


def test_fingerprints_are_saved_apart_from_the_digest_and_checked_on_load(part_calibrated, tmp_path):
    snn, model, *_ = part_calibrated
    transpike.save(snn, tmp_path / "net.safetensors")
    loaded = transpike.load(tmp_path / "net.safetensors", model=model)
    assert torch.equal(loaded.calibration_fingerprints, snn.calibration_fingerprints)
    digest = snn.digest()
    snn.calibration_fingerprints = None
    assert snn.digest() == digest  # the same network, wherever its calibration data came from
    transpike.save(snn, tmp_path / "old.safetensors")  # as a file written before they were kept
    assert transpike.load(tmp_path / "old.safetensors", model=model).calibration_fingerprints is None
    tensors = load_file(tmp_path / "net.safetensors")
    tensors[FINGERPRINTS] = tensors[FINGERPRINTS].float()
    header = json.dumps(read_header(tmp_path / "net.safetensors"))
    save_file(tensors, tmp_path / "bad.safetensors", metadata={"transpike": header})
    with pytest.raises(
        ValueError, match=r"bad.safetensors: bad calibration fingerprints: torch.float32 of shape"
    ):
        transpike.load(tmp_path / "bad.safetensors", model=model)


def test_info_and_the_command_line_say_what_was_kept(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--time-steps", "2"]) == 0
    assert "none of these samples was a calibration sample" in capsys.readouterr().out
    info = network_info(tmp_path / "demo" / "snn.safetensors")
    assert info["calibration_fingerprints"] == info["provenance"]["calibration"]["samples"] == 1078
    assert info["calibration_set"] == set_digest(
        transpike.load(tmp_path / "demo" / "snn.safetensors").calibration_fingerprints
    )
    assert f"calibration samples: 1078 fingerprints kept (set {info['calibration_set']})" in format_info(info)
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert results["calibration_samples"] == 0 and results["calibration_set"] == info["calibration_set"]
    assert load_predictions(tmp_path / "demo").about["calibration_set"] == info["calibration_set"]
    # evaluated on its own calibration data (digits:train), every sample is one
    argv = ["eval", "--snn", str(tmp_path / "demo" / "snn.safetensors"), "--data", "digits:train",
            "--time-steps", "1", "--limit", "50", "--out", str(tmp_path / "train")]  # fmt: skip
    with pytest.warns(UserWarning, match="50 of the 50 evaluated samples were calibration samples"):
        assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "50 of these samples were calibration samples" in printed and "on the other" not in printed
    assert int(load_predictions(tmp_path / "train").calibration.sum()) == 50


def test_compare_warns_of_a_side_scored_on_its_calibration_samples(tmp_path):
    labels = torch.tensor([0, 1, 1, 0], dtype=torch.int32)
    rows = dict(labels=labels, ann=labels.clone(), snn=labels[:, None].clone())
    save_predictions(dict(rows, calibration=torch.tensor([0, 1, 1, 0])), {}, tmp_path / "a.safetensors")
    save_predictions(rows, {}, tmp_path / "b.safetensors")
    a, b = load_predictions(tmp_path / "a.safetensors"), load_predictions(tmp_path / "b.safetensors")
    assert a.calibration.tolist() == [0, 1, 1, 0] and b.calibration is None
    with pytest.warns(RuntimeWarning, match="a.safetensors: 2 of its 4 samples were calibration samples"):
        result = compare(b, [a])
    assert result["reference"]["calibration_samples"] is None
    assert result["comparisons"][0]["calibration_samples"] == 2
    # the command prints a warning as what is wrong, not as Python's source line
    argv = [sys.executable, "-m", "transpike", "compare", str(tmp_path / "b.safetensors"),
            str(tmp_path / "a.safetensors"), "--out", str(tmp_path / "compared")]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("transpike: warning: ") and "2 of its 4 samples" in done.stderr
    assert "RuntimeWarning" not in done.stderr
    save_predictions(dict(rows, calibration=torch.tensor([0, 1])), {}, tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match=r"damaged predictions file .* optionally index and calibration"):
        load_predictions(tmp_path / "c.safetensors")


def test_compare_names_another_calibration_set_as_a_difference():
    first = dict(options={"levels": 8}, model="m", data="d", calibration_set="1a35cb9fb4523cda")
    assert differing_options(first, {**first, "calibration_set": "0f0e0d0c0b0a0908"}) == {
        "calibration_set": ["1a35cb9fb4523cda", "0f0e0d0c0b0a0908"]
    }
    assert differing_options(first, dict(first)) == {}
