"""Interrupted evaluations continue where they stopped and end with an uninterrupted run's totals."""

import errno

import pytest
import torch
from conftest import interrupt_after, tiny_vit
from torch.utils.data import TensorDataset

import transpike
from transpike import progress
from transpike.evaluate import evaluate
from transpike.progress import VERSION, Progress


@pytest.fixture
def setup(images):
    calibration, _ = images
    model = tiny_vit()
    snn = transpike.convert(model, calibration, method="sit")  # MT sites, products and softmaxes
    gen = torch.Generator().manual_seed(3)
    data = TensorDataset(torch.randn(20, 3, 16, 16, generator=gen), torch.randint(0, 5, (20,), generator=gen))
    return snn, model, data


def test_an_interrupted_evaluation_resumes_to_the_uninterrupted_totals(setup, tmp_path, monkeypatch):
    snn, model, data = setup
    whole = evaluate(snn, model, data, 4, batch_size=6, progress=False, predictions=True)
    folder = tmp_path / "progress"
    # no periodic save: what is kept is the last whole batch's totals, written as the run stops
    store = Progress(folder, "eval", dict(data="random"), resume=False, every=1e9)
    interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        evaluate(snn, model, data, 4, batch_size=6, progress=False, store=store, predictions=True)
    assert [p.name for p in folder.iterdir()] == ["eval.rank0.safetensors"]
    seen = interrupt_after(monkeypatch, 100)
    store = Progress(folder, "eval", dict(data="random"), resume=True)
    # the batch size may change
    resumed = evaluate(snn, model, data, 4, batch_size=5, progress=False, store=store, predictions=True)
    assert seen == [5, 3]  # only the 8 samples left after two batches of 6
    assert resumed["num_samples"] == 20 and resumed["resumed_samples"] == 12
    assert resumed["snn_top1"] == whole["snn_top1"] and whole["resumed_samples"] == 0
    assert resumed["ann_top1"] == whole["ann_top1"]
    assert resumed["energy"].to_dict() == whole["energy"].to_dict()  # spike sums exact in float64
    assert resumed["early_exit"] == whole["early_exit"]
    assert resumed["difference_ci95"] == whole["difference_ci95"]
    for name, rows in whole["predictions"].items():  # the interrupted run's samples come from its totals
        assert torch.equal(resumed["predictions"][name], rows)
    # a finished evaluation's totals say so: resumed again, it simulates nothing
    seen.clear()
    again = evaluate(snn, model, data, 4, progress=False, store=store, predictions=True)
    assert seen == [] and again["snn_top1"] == whole["snn_top1"]


def test_a_resumed_evaluation_must_be_the_same_evaluation(setup, tmp_path, images, monkeypatch):
    snn, model, data = setup
    folder = tmp_path / "progress"
    evaluate(
        snn, model, data, 2, limit=6, progress=False, store=Progress(folder, "eval", dict(data="a"), False)
    )
    cases = [
        (dict(time_steps=3, limit=6), dict(data="a"), "time_steps 2 there, 3 here"),
        (dict(time_steps=2, limit=8), dict(data="a"), "samples 6 there, 8 here"),
        (dict(time_steps=2, limit=6), dict(data="b"), "data 'a' there, 'b' here"),
        (dict(time_steps=2, limit=6, energy=False), dict(data="a"), "energy True there, False here"),
        (dict(time_steps=2, limit=6, exits=(0.9,)), dict(data="a"), r"exit_rules \[\['confidence', 0.5\], "),
        (dict(time_steps=2, limit=6, predictions=True), dict(data="a"), "predictions False there, True here"),
    ]
    for kwargs, context, message in cases:
        with pytest.raises(ValueError, match=message):
            evaluate(
                snn, model, data, progress=False, store=Progress(folder, "eval", context, True), **kwargs
            )
    other = transpike.convert(model, images[0], method="sit", percentile=99.9)
    with pytest.raises(ValueError, match=r"network '[0-9a-f]{64}' there, '[0-9a-f]{64}' here"):
        evaluate(
            other,
            model,
            data,
            2,
            limit=6,
            progress=False,
            store=Progress(folder, "eval", dict(data="a"), True),
        )
    other_format = Progress(folder, "eval", dict(data="a"), True)
    monkeypatch.setattr("transpike.progress.VERSION", VERSION + 1)  # totals written in another layout
    with pytest.raises(ValueError, match=f"format {VERSION} there, {VERSION + 1} here"):
        evaluate(snn, model, data, 2, limit=6, progress=False, store=other_format)
    (folder / "eval.rank0.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a transpike progress file"):
        evaluate(
            snn, model, data, 2, limit=6, progress=False, store=Progress(folder, "eval", dict(data="a"), True)
        )


def test_totals_are_saved_at_most_every_interval(tmp_path):
    tensors = dict(counts=torch.zeros(3))
    Progress(tmp_path, "eval", {}, resume=False, every=1e9).save({}, 0, tensors)
    assert not any(tmp_path.iterdir())
    Progress(tmp_path, "eval", {}, resume=False, every=0).save({}, 1, tensors)
    assert [p.name for p in tmp_path.iterdir()] == ["eval.rank1.safetensors"]


def test_a_failed_save_warns_and_the_evaluation_goes_on(setup, tmp_path, monkeypatch):
    snn, model, data = setup
    whole = evaluate(snn, model, data, 2, batch_size=6, progress=False)
    folder, write = tmp_path / "progress", progress.atomic_write
    saves = []

    def full_after_one(path, writer):  # the disk fills after the first save
        saves.append(path)
        if len(saves) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, writer)

    monkeypatch.setattr(progress, "atomic_write", full_after_one)
    interrupt_after(monkeypatch, 3)
    store = Progress(folder, "eval", dict(data="random"), resume=False, every=0)
    failed = pytest.warns(RuntimeWarning, match=r"could not save .*eval.rank0.safetensors .*No space left")
    with failed, pytest.raises(KeyboardInterrupt):  # the interruption, not the failed save, ends the run
        evaluate(snn, model, data, 2, batch_size=6, progress=False, store=store)
    assert len(saves) == 4  # after batches 1, 2 and 3, and as the run stopped
    monkeypatch.setattr(progress, "atomic_write", write)
    seen = interrupt_after(monkeypatch, 100)
    resumed = evaluate(snn, model, data, 2, batch_size=6, progress=False,
                       store=Progress(folder, "eval", dict(data="random"), resume=True))  # fmt: skip
    assert seen == [6, 6, 2] and resumed["resumed_samples"] == 6  # from the one save that succeeded
    assert resumed["snn_top1"] == whole["snn_top1"] and resumed["ann_top1"] == whole["ann_top1"]


def test_the_digest_names_the_network_not_its_state(setup, images):
    snn, model, _ = setup
    digest = snn.digest()
    snn.simulate(images[1], 3)  # membranes and running sums are not the network
    assert snn.digest() == digest == transpike.convert(model, images[0], method="sit").digest()
    assert transpike.convert(model, images[0], method="sit", sit_steps=10).digest() != digest
