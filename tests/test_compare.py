"""Evaluations compared sample by sample: McNemar's test, the predictions files, transpike.compare."""

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_vit
from safetensors.torch import save_file
from scipy.stats import binomtest
from torch.utils.data import TensorDataset

import transpike
from transpike import cli
from transpike.compare import class_rows, compare, differing_options, paired_rows
from transpike.data import spread
from transpike.evaluate import evaluate
from transpike.predictions import Predictions, load_predictions, save_predictions
from transpike.results import format_comparison, write_comparison
from transpike.scores import holm, mcnemar_p, paired_interval


def test_mcnemar_p_is_the_exact_binomial_test_of_the_disagreements():
    lost = torch.tensor([0.0, 3, 10, 7, 0, 250, 12000, 1])
    gained = torch.tensor([0.0, 1, 10, 30, 5, 300, 12300, 0])
    expected = [1.0 if a + b == 0 else binomtest(int(min(a, b)), int(a + b), 0.5).pvalue
                for a, b in zip(lost.tolist(), gained.tolist(), strict=True)]  # fmt: skip
    assert mcnemar_p(lost, gained).tolist() == pytest.approx(expected, rel=1e-9)
    assert torch.equal(mcnemar_p(lost, gained), mcnemar_p(gained, lost))  # two-sided
    assert mcnemar_p(torch.tensor(0.0), torch.tensor(6.0)).item() == pytest.approx(2 / 64)  # 2·(1/2)^6


def test_holm_adjusts_each_p_by_its_rank_and_keeps_their_order():
    p = torch.tensor([0.01, 0.04, 0.03, 0.5], dtype=torch.float64)
    # sorted: 0.01·4, 0.03·3, 0.04·2 (raised to the 0.09 before it), 0.5·1
    assert holm(p).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm(torch.tensor([0.6, 0.9], dtype=torch.float64)).tolist() == [1.0, 1.0]  # capped at 1
    assert holm(torch.tensor([0.02], dtype=torch.float64)).tolist() == [0.02]  # one test: unchanged


def predictions(labels, snn, ann=None, path="run", **about):
    labels = torch.tensor(labels, dtype=torch.int32)
    snn = torch.tensor(snn, dtype=torch.int32)
    ann = labels.clone() if ann is None else torch.tensor(ann, dtype=torch.int32)
    return Predictions(path, labels, ann, snn, {"data": "d", **about})


def test_paired_rows_count_the_samples_one_of_two_gets_right():
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    first = torch.tensor([[0, 0], [1, 1], [2, 0], [0, 0], [4, 4], [5, 5]])  # right: 5 then 4
    second = torch.tensor([[0, 0], [0, 1], [2, 2], [3, 3], [4, 0], [5, 5]])  # right: 5 then 5
    t1, t2 = paired_rows(labels, first, second)
    assert (t1["first_only"], t1["second_only"]) == (1, 1) and t1["difference"] == 0.0
    assert (t2["first_only"], t2["second_only"]) == (1, 2)  # sample 4; samples 2 and 3
    assert t2["first_top1"] == pytest.approx(400 / 6) and t2["second_top1"] == pytest.approx(500 / 6)
    one, two = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert t2["difference_ci95"] == paired_interval(one, two, 6).item()
    assert t2["p_value"] == mcnemar_p(one, two).item() == 1.0 and t2["p_holm"] == 1.0


def test_compare_reads_every_t_both_reached_and_names_what_differs():
    reference = predictions([0, 1, 1, 0], [[1, 0, 0], [1, 1, 1], [0, 1, 1], [0, 0, 0]], options={"levels": 8},
                            energy_ratio_full=[0.1, 0.2, 0.3])  # fmt: skip
    other = predictions([0, 1, 1, 0], [[0, 0], [1, 1], [1, 1], [0, 0]], ann=[0, 1, 1, 1], path="other",
                        options={"levels": 29, "percentile": 99.0})  # fmt: skip
    result = compare(reference, [other])
    assert result["num_samples"] == 4 and result["reference"]["path"] == "run"
    (entry,) = result["comparisons"]
    assert [row["t"] for row in entry["rows"]] == [1, 2]  # the shorter run's T
    assert [row["difference"] for row in entry["rows"]] == [50.0, 0.0]
    assert entry["differs"] == {"levels": [8, 29], "percentile": [None, 99.0]}
    # the energy after each t where it was counted: the other run did not count spikes
    assert [(row["first_energy"], row["second_energy"]) for row in entry["rows"]] == [
        (0.1, None),
        (0.2, None),
    ]
    assert not entry["same_ann"] and entry["ann"]["first_only"] == 1 and entry["ann"]["difference"] == -25.0
    assert compare(reference, [reference])["comparisons"][0]["same_ann"]
    assert differing_options({"model": "a", "options": {}}, {"model": "b"}) == {"model": ["a", "b"]}


def test_compare_tests_which_run_keeps_more_of_the_anns_decisions():
    # the ANN is wrong on sample 3; both runs get 3 of 4 right, but the reference decides as the
    # ANN on samples 0 and 1 only, the other on all four
    reference = predictions([0, 1, 2, 3], [[0], [1], [0], [3]], ann=[0, 1, 2, 0])
    other = predictions([0, 1, 2, 3], [[0], [1], [2], [0]], ann=[0, 1, 2, 0], path="other")
    (entry,) = compare(reference, [other])["comparisons"]
    assert entry["rows"][0]["difference"] == 0.0
    (kept,) = entry["agreement"]
    assert (kept["first_top1"], kept["second_top1"]) == (50.0, 100.0)
    assert (kept["first_only"], kept["second_only"]) == (0, 2) and kept["p_value"] == mcnemar_p(0, 2).item()
    assert "same top-1 as the ANN at t = 1: 50.00 % -> 100.00 %: +50.00" in format_comparison(
        compare(reference, [other])
    )
    # ANNs that decide differently leave nothing to pair the runs' agreement on
    elsewhere = predictions([0, 1, 2, 3], [[0], [1], [2], [0]], path="elsewhere")
    assert compare(reference, [elsewhere])["comparisons"][0]["agreement"] is None


def test_compare_refuses_other_samples_and_warns_of_other_data():
    reference = predictions([0, 1, 2], [[0], [1], [2]])
    with pytest.raises(ValueError, match="holds 2 samples and run 3: compare evaluations of the same data"):
        compare(reference, [predictions([0, 1], [[0], [1]], path="short")])
    with pytest.raises(ValueError, match=r"the labels differ at 1 of 3 samples \(the first is sample 2\)"):
        compare(reference, [predictions([0, 1, 1], [[0], [1], [1]], path="other")])
    with pytest.warns(RuntimeWarning, match="evaluated 'e' and run 'd'; their labels agree"):
        compare(reference, [predictions([0, 1, 2], [[0], [1], [0]], data="e")])


def test_evaluate_returns_every_samples_top1_in_order(images):
    model = tiny_vit(num_classes=10)
    snn = transpike.convert(model, images[0])
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(11, 3, 16, 16, generator=gen), torch.randint(0, 10, (11,), generator=gen)
    results = evaluate(snn, model, TensorDataset(x, y), 4, batch_size=3, progress=False, energy=False,
                       predictions=True)  # fmt: skip
    chosen = results["predictions"]
    assert torch.equal(chosen["labels"], y.int()) and torch.equal(chosen["ann"], model(x).argmax(-1).int())
    assert torch.equal(chosen["snn"], snn.simulate(x, 4).argmax(-1).T.int())
    right = (chosen["snn"] == y[:, None]).sum(0).double()
    assert results["snn_top1"] == (100.0 * right / 11).tolist()  # the counts and the rows agree
    assert chosen["index"].tolist() == list(range(11))
    assert "predictions" not in evaluate(snn, model, TensorDataset(x, y), 2, progress=False, energy=False)
    # a limit takes samples spread evenly: 4 of 11 are samples 0, 2, 5 and 8
    data = TensorDataset(x, y)
    part = evaluate(snn, model, data, 2, limit=4, progress=False, energy=False, predictions=True)
    assert part["predictions"]["index"].tolist() == [0, 2, 5, 8] and part["num_samples"] == 4
    assert torch.equal(part["predictions"]["snn"], chosen["snn"][[0, 2, 5, 8], :2])


def test_spread_gives_every_class_of_sorted_data_its_share():
    assert spread(10, 3) == [0, 3, 6] and spread(5, None) == spread(5, 9) == [0, 1, 2, 3, 4]
    labels = torch.arange(1000).repeat_interleave(50)  # ImageNet's validation set, sorted by class
    assert labels[spread(len(labels), 1000)].tolist() == list(range(1000))  # one image of each class
    assert labels[spread(len(labels), 3000)].bincount().tolist() == [3] * 1000
    assert spread(0, 5) == []


def test_compare_refuses_evaluations_of_other_samples_by_index(tmp_path):
    reference = predictions([0, 1], [[0], [1]])
    other = predictions([0, 1], [[0], [1]], path="other")
    assert compare(reference, [other])  # files without indices: the labels decide
    reference, other = (
        Predictions(p.path, p.labels, p.ann, p.snn, p.about, index=torch.tensor(i, dtype=torch.int32))
        for p, i in ((reference, [0, 4]), (other, [0, 5]))
    )
    with pytest.raises(ValueError, match="other and run evaluated other samples of their data"):
        compare(reference, [other])


def test_predictions_files_round_trip_and_refuse_what_they_cannot_read(tmp_path):
    rows = dict(labels=torch.tensor([3, 1]), ann=torch.tensor([3, 0]), snn=torch.tensor([[3, 3], [0, 1]]))
    path = save_predictions(rows, {"model": "m", "data": "d"}, tmp_path / "run" / "predictions.safetensors")
    for source in (path, tmp_path / "run"):  # the file, or the results directory holding it
        loaded = load_predictions(source)
        assert loaded.path == path and loaded.about == {"model": "m", "data": "d"} and loaded.time_steps == 2
        assert all(torch.equal(getattr(loaded, k), rows[k].int()) for k in rows)
    sweep = tmp_path / "sweep"
    save_predictions(rows, {}, sweep / "predictions.blocks-1.safetensors")
    with pytest.raises(ValueError, match=r"no predictions.safetensors in this directory; it holds "
                                         r"predictions.blocks-1.safetensors: name one"):  # fmt: skip
        load_predictions(sweep)
    with pytest.raises(ValueError, match="missing: no such predictions file"):
        load_predictions(tmp_path / "missing")
    (tmp_path / "junk").write_bytes(b"not safetensors at all")
    with pytest.raises(ValueError, match="junk: not a transpike predictions file"):
        load_predictions(tmp_path / "junk")
    save_file({"labels": torch.zeros(2, dtype=torch.int32)}, tmp_path / "foreign")
    with pytest.raises(ValueError, match="foreign: not a transpike predictions file"):
        load_predictions(tmp_path / "foreign")
    meta = {"format": "transpike-predictions", "version": "1", "about": "{}"}
    save_file({"labels": torch.zeros(2, dtype=torch.int32), "ann": torch.zeros(3, dtype=torch.int32),
               "snn": torch.zeros(2, 1, dtype=torch.int32)}, tmp_path / "damaged", metadata=meta)  # fmt: skip
    with pytest.raises(ValueError, match=r"damaged: damaged predictions file \(tensors .*'ann': \(3,\)"):
        load_predictions(tmp_path / "damaged")
    save_file(rows | {"labels": rows["labels"].int()}, tmp_path / "newer", metadata={**meta, "version": "2"})
    with pytest.raises(
        ValueError, match="newer: predictions format version 2; this transpike reads version 1"
    ):
        load_predictions(tmp_path / "newer")
    assert json.loads(json.dumps(load_predictions(path).about)) == {"model": "m", "data": "d"}


def test_compare_names_the_classes_one_run_loses_beyond_chance(tmp_path):
    # 4 classes of 60 samples: the second run loses 20 of class 1's, gains 30 of class 2's and
    # swaps 2 either way in class 3
    labels = torch.arange(4).repeat_interleave(60)
    first = labels.clone()
    second = labels.clone()
    second[60:80] = 0
    first[120:150] = 0
    second[180:182] = 0
    first[182:184] = 0
    table = class_rows(labels, first, second)
    assert table["classes"] == [0, 1, 2, 3] and table["samples"] == [60] * 4
    assert table["first_only"] == [0, 20, 0, 2] and table["second_only"] == [0, 0, 30, 2]
    assert table["difference"] == pytest.approx([0.0, -100 / 3, 50.0, 0.0])
    assert table["p_value"][1] == pytest.approx(2 * 0.5**20) and table["p_value"][3] == 1.0
    reference = predictions(
        labels.tolist(), [[c] for c in first.tolist()], class_names=["ant", "bee", "cat", "dog"]
    )
    other = predictions(labels.tolist(), [[c] for c in second.tolist()], path="other")
    result = compare(reference, [other])
    assert result["comparisons"][0]["classes"] == table
    line = "per class at t = 1: 2 of 4 differ from the reference beyond chance (Holm, 5 %): "
    assert line + "2 cat (+50.0), 1 bee (-33.3)" in format_comparison(result)  # the largest first
    paths = write_comparison(result, tmp_path)
    lines = paths[2].read_text().splitlines()
    assert lines[2].startswith("run,other,1,1,bee,60,100,66.6667,-33.3333,20,0,")


def test_compare_takes_the_classes_at_any_t_both_reached(tmp_path, capsys):
    # two steps: the runs differ on class 1 after one step, agree after two
    labels = [0] * 20 + [1] * 20
    reference = predictions(labels, [[c, c] for c in labels])
    other = predictions(labels, [[0, c] for c in labels], path="other")
    last, first = (compare(reference, [other], t)["comparisons"][0] for t in (None, 1))
    assert (last["classes_t"], last["classes"]["difference"]) == (2, [0.0, 0.0])
    assert (first["classes_t"], first["classes"]["difference"]) == (1, [0.0, -100.0])
    with pytest.raises(ValueError, match=r"classes at t = 3: other and run both reach t = 1\.\.2 only"):
        compare(reference, [other], 3)
    files = [str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]
    for run, path in zip((reference, other), files, strict=True):
        save_predictions(
            dict(labels=run.labels.clone(), ann=run.ann.clone(), snn=run.snn.clone()), {}, Path(path)
        )
    assert cli.main(["compare", *files, "--classes-at", "1"]) == 0
    assert "per class at t = 1: 1 of 2 differ from the reference beyond chance" in capsys.readouterr().out
    assert cli.main(["compare", *files, "--classes-at", "0", "--out", str(tmp_path / "none")]) == 2
    assert "--classes-at" in capsys.readouterr().err and not (tmp_path / "none").exists()
    assert cli.main(["compare", *files, "--classes-at", "3", "--out", str(tmp_path / "none")]) == 2
    assert "both reach t = 1..2 only" in capsys.readouterr().err and not (tmp_path / "none").exists()
