"""filelist:FILE[:ROOT] data: the images a list file names, each with its class; images:PATH data:
every image under a folder, without labels, scored against the ANN."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from transpike import cli
from transpike.data import UNLABELLED, load_dataset, parse_spec
from transpike.models import create_model
from transpike.predictions import load_predictions

TINY = dict(img_size=16, patch_size=4, embed_dim=24, depth=1, num_heads=3)


def images(folder, names, size=(20, 24)):
    """Random RGB images under ``folder``, one per name."""
    gen = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(gen.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name)


def model(classes):
    return create_model("vit_tiny_patch16_224", dict(TINY, num_classes=classes))


def test_integer_classes_with_paths_from_the_file_folder(tmp_path):
    """ImageNet's flat validation folder with Caffe's val.txt: 'FILE CLASS' per line."""
    images(tmp_path, ["a.png", "b.png", "c.png"])
    # a byte-order mark and a Windows line end, as an editor may leave them
    (tmp_path / "val.txt").write_text("\ufeffa.png 2\r\n\n# a comment\nb.png 0\n  c.png   1  \n")
    data = load_dataset(f"filelist:{tmp_path / 'val.txt'}", "test", model(3))
    assert len(data) == 3 and [data[i][1] for i in range(3)] == [2, 0, 1]
    x, _ = data[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32


def test_named_classes_with_a_root_and_extra_fields(tmp_path):
    """Tiny-ImageNet's val/val_annotations.txt: tab-separated, a WordNet id, then a box; images in
    val/images/. Names are numbered in sorted order, as ImageFolder numbers its class folders."""
    images(tmp_path / "val" / "images", ["val_0.JPEG", "val_1.JPEG", "val_2.JPEG"])
    lines = ["val_0.JPEG\tn03444034\t0\t32\t44\t62", "val_1.JPEG\tn01443537\t52\t0\t63\t48",
             "val_2.JPEG\tn03444034\t1\t2\t3\t4"]  # fmt: skip
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    spec = f"filelist:{tmp_path / 'val' / 'val_annotations.txt'}:{tmp_path / 'val' / 'images'}"
    assert parse_spec(spec, "test")[0] == "filelist"
    data = load_dataset(spec, "test", model(2))
    assert [data[i][1] for i in range(3)] == [1, 0, 1] and data.classes == ["n01443537", "n03444034"]
    assert data.paths[0] == tmp_path / "val" / "images" / "val_0.JPEG"


def test_commas_and_absolute_paths_with_spaces(tmp_path):
    images(tmp_path / "my images", ["one x.png", "two.png"])
    listed = f"{tmp_path / 'my images' / 'one x.png'}, 1\n{tmp_path / 'my images' / 'two.png'},0\n"
    (tmp_path / "list.csv").write_text(listed)
    data = load_dataset(f"filelist:{tmp_path / 'list.csv'}", "test", model(2))
    assert [data[i][1] for i in range(2)] == [1, 0]


@pytest.mark.parametrize(
    ("content", "classes", "message"),
    [
        ("a.png 0\nb.png\n", 2, r"list.txt, line 2: expected an image path and its class, got 'b.png'"),
        (
            "a.png 0\nmissing.png 1\ngone.png 1\n",
            2,
            r"2 of 3 images not found, the first .*missing.png \(line 2\)",
        ),
        ("a.png 0\nb.png 5\n", 5, r"list.txt, line 2: class 5, but the model has 5"),
        ("a.png cat\nb.png dog\n", 3, r"names 2 classes and the model has 3: .* give integer classes"),
        ("# nothing\n\n", 2, r"list.txt: lists no images"),
    ],
)
def test_bad_lists_are_refused_naming_file_and_line(tmp_path, content, classes, message):
    images(tmp_path, ["a.png", "b.png"])
    (tmp_path / "list.txt").write_text(content)
    with pytest.raises(ValueError, match=message):
        load_dataset(f"filelist:{tmp_path / 'list.txt'}", "test", model(classes))


def test_bad_specs_name_what_is_missing(tmp_path):
    (tmp_path / "list.txt").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match=r"list.txt: not a text file"):
        load_dataset(f"filelist:{tmp_path / 'list.txt'}", "test", model(2))
    with pytest.raises(ValueError, match=r"no-such.txt is not a file"):
        parse_spec(f"filelist:{tmp_path / 'no-such.txt'}", "test")
    with pytest.raises(ValueError, match=r"nowhere is not a folder"):
        parse_spec(f"filelist:{tmp_path / 'list.txt'}:{tmp_path / 'nowhere'}", "test")


def test_a_list_of_an_image_folder_evaluates_as_the_folder(tmp_path):
    """The same images named by a list (classes as names) and read as an ImageFolder: the same
    samples, labels and accuracies from ``transpike eval``."""
    for cls in ("cat", "dog"):
        images(tmp_path / "images" / cls, ["0.png", "1.png"])
    listed = [f"{cls}/{i}.png {cls}" for cls in ("cat", "dog") for i in range(2)]
    (tmp_path / "images" / "list.txt").write_text("\n".join(listed) + "\n")
    kwargs = [f"{k}={v}" for k, v in TINY.items()] + ["num_classes=2"]
    folder = f"imagefolder:{tmp_path / 'images'}"
    argv = ["eval", "--model", "vit_tiny_patch16_224", "--model-kwargs", *kwargs, "--calib", folder,
            "--time-steps", "2", "--no-energy"]  # fmt: skip
    for name, data in (("folder", folder), ("list", f"filelist:{tmp_path / 'images' / 'list.txt'}")):
        assert cli.main([*argv, "--data", data, "--out", str(tmp_path / name)]) == 0
    one, two = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("folder", "list"))
    assert one["num_samples"] == two["num_samples"] == 4
    assert (one["ann_top1"], one["snn_top1"]) == (two["ann_top1"], two["snn_top1"])
    assert two["data"].startswith("filelist:")
    # calibrated on the folder: read through the list, the same images are found as calibration samples
    assert one["calibration_samples"] == two["calibration_samples"] == 4
    for name in ("folder", "list"):  # classes named as the folder and the list name them
        rows = (tmp_path / name / "classes.csv").read_text().splitlines()[1:]
        assert [row.split(",")[:3] for row in rows] == [["0", "cat", "2"], ["1", "dog", "2"]]
        assert load_predictions(tmp_path / name).about["class_names"] == ["cat", "dog"]


def test_images_without_labels_are_every_image_under_a_folder_in_sorted_order(tmp_path):
    images(tmp_path / "b", ["2.png", "1.jpg"])
    images(tmp_path, ["a.PNG"])
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_dataset(f"images:{tmp_path}", "test", model(3))
    assert [p.relative_to(tmp_path).as_posix() for p in data.paths] == ["a.PNG", "b/1.jpg", "b/2.png"]
    assert [data[i][1] for i in range(3)] == [UNLABELLED] * 3 and data[0][0].shape == (3, 16, 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"images data .*empty: no image files under it \(.jpg"):
        load_dataset(f"images:{tmp_path / 'empty'}", "test", model(3))


def test_images_without_labels_calibrate_trace_and_evaluate_against_the_ann(tmp_path, capsys):
    images(tmp_path / "calib", [f"{i}.png" for i in range(4)])
    images(tmp_path / "test" / "x", [f"{i}.png" for i in range(3)], size=(24, 20))  # not the calibration ones
    kwargs = [f"{k}={v}" for k, v in TINY.items()] + ["num_classes=3"]
    calib = f"images:{tmp_path / 'calib'}"
    argv = [
        "--model",
        "vit_tiny_patch16_224",
        "--model-kwargs",
        *kwargs,
        "--calib",
        calib,
        "--time-steps",
        "3",
    ]
    out = tmp_path / "eval"
    assert cli.main(["eval", *argv, "--data", f"images:{tmp_path / 'test'}", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "scored against the ANN's own top-1, not labels" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["scored_against"] == "ann" and results["ann_top1"] == 100.0 and results["num_samples"] == 3
    assert results["snn_top1"] == results["agreement"]  # the SNN's top-1 against the ANN's is agreement
    chosen = load_predictions(out)
    assert torch.equal(chosen.labels, chosen.ann) and chosen.about["scored_against"] == "ann"
    # labelled data scored against the ANN reads the same, and the labels are not read
    labelled = tmp_path / "labelled"
    data = f"imagefolder:{tmp_path / 'test'}"
    assert cli.main(["eval", *argv, "--data", data, "--against-ann", "--out", str(labelled)]) == 0
    again = json.loads((labelled / "results.json").read_text())
    assert again["snn_top1"] == results["snn_top1"] and again["ann_top1"] == 100.0
    # against the labels the two are not compared, and the trace needs no labels either
    assert cli.main(["eval", *argv, "--data", data, "--out", str(tmp_path / "by-labels")]) == 0
    capsys.readouterr()
    assert cli.main(["compare", str(out), str(tmp_path / "by-labels")]) == 2
    assert "was scored against the labels and" in capsys.readouterr().err
    trace = ["trace", *argv, "--data", f"images:{tmp_path / 'test'}", "--out", str(tmp_path / "trace")]
    assert cli.main(trace) == 0
    assert json.loads((tmp_path / "trace" / "trace.json").read_text())["samples"] == 3


def test_an_image_that_cannot_be_read_is_named(tmp_path, capsys):
    images(tmp_path / "cls", ["good.png"])
    (tmp_path / "cls" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "cls" / "cut.png").write_bytes((tmp_path / "cls" / "good.png").read_bytes()[:60])
    for spec in (f"images:{tmp_path}", f"imagefolder:{tmp_path}"):
        data = load_dataset(spec, "test", model(3))  # sorted: broken, cut, good
        with pytest.raises(ValueError, match=r"image .*broken.png: not an image file PIL can read"):
            data[0]
        with pytest.raises(ValueError, match=r"image .*cut.png: cannot be read \(image file is truncated"):
            data[1]
    kwargs = [f"{k}={v}" for k, v in TINY.items()] + ["num_classes=3"]
    data = f"images:{tmp_path}"
    argv = ["trace", "--model", "vit_tiny_patch16_224", "--model-kwargs", *kwargs, "--calib", data,
            "--data", data, "--time-steps", "2", "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 2
    error = capsys.readouterr().err  # calibration reads the images in an order of its own
    assert error.startswith("transpike: error: image ") and ("broken.png: " in error or "cut.png: " in error)
    # read by a loading process, whose traceback torch puts in the message: the message alone
    assert cli.main([*argv, "--workers", "1"]) == 2
    error = capsys.readouterr().err
    assert (
        error.startswith("transpike: error: image ") and "Traceback" not in error and error.count("\n") == 1
    )
