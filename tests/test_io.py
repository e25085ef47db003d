"""Saving and loading converted networks: round trips, foreign files, and no code execution."""

import json
import os
import pickle

import pytest
import torch
from conftest import TINY, tiny_vit
from safetensors.torch import load_file, save_file

import transpike
from transpike.io import read_header, rebuild_ann

SPEC = {"timm": "vit_tiny_patch16_224", "kwargs": TINY}


@pytest.fixture
def snn(images):
    return transpike.convert(tiny_vit(), images[0], model_spec=SPEC, granularity="channel", neuron="burst")


def test_round_trip_is_bit_identical(snn, images, tmp_path):
    path = transpike.save(snn, tmp_path / "net.safetensors")
    loaded = transpike.load(path)
    assert loaded.options == snn.options
    assert torch.equal(loaded.simulate(images[1], 6), snn.simulate(images[1], 6))
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind


def test_round_trip_keeps_levels_per_octave(images, tmp_path):
    snn = transpike.convert(tiny_vit(), images[0], model_spec=SPEC, threshold="mse", levels_per_octave=3)
    loaded = transpike.load(transpike.save(snn, tmp_path / "net.safetensors"))
    assert loaded.options == snn.options and loaded.options["levels"] == 22
    neurons = [m for m in loaded.network.modules() if isinstance(m, transpike.MTNeuron)]
    assert neurons and all(m.per_octave == 3 and m.levels == 22 for m in neurons)
    assert torch.equal(loaded.simulate(images[1], 6), snn.simulate(images[1], 6))


@pytest.mark.parametrize("norm_spikes", [64, None])  # None: from the row length
def test_round_trip_of_sit_keeps_its_spiking_softmax(images, tmp_path, norm_spikes):
    model = tiny_vit()
    snn = transpike.convert(
        model, images[0], model_spec=SPEC, method="sit", sit_steps=5, sit_norm_spikes=norm_spikes
    )
    loaded = transpike.load(transpike.save(snn, tmp_path / "net.safetensors"))
    softmax = loaded.network.blocks[0].attn.softmax.f
    assert (softmax.steps, softmax.norm_spikes) == (5, norm_spikes)
    with torch.no_grad():  # the ANN comes back without SI-exp's parameters (`transpike eval --snn`)
        assert torch.equal(rebuild_ann(loaded)(images[1]), model(images[1]))
    assert torch.equal(loaded.simulate(images[1], 4), snn.simulate(images[1], 4))


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("vit_giant_patch14_reg4_dinov2", {}),
        ("aimv2_large_patch14_224", {}),
        ("vit_base_patch16_siglip_224", {}),
        ("eva_giant_patch14_224", {}),
        ("eva02_base_patch14_224", {}),
        ("vit_dpwee_patch16_reg1_gap_256", {}),  # differential attention in parallel blocks
        ("vit_small_patch16_18x2_224", {}),  # ParallelThingsBlock
        ("vit_tiny_patch16_224", dict(global_pool="max", class_token=False)),
        ("vit_tiny_patch16_224", dict(global_pool="prr")),
    ],
)
def test_round_trip_of_twins(name, kwargs, images, tmp_path):
    """The twins of GLU MLPs, attention pools, EVA's and differential attention, parallel blocks
    and the max pool keep the ANN's parameter names."""
    spec = {"timm": name, "kwargs": {**TINY, **kwargs}}
    snn = transpike.convert(tiny_vit(name, **kwargs), images[0], model_spec=spec)
    loaded = transpike.load(transpike.save(snn, tmp_path / "net.safetensors"))
    assert torch.equal(loaded.simulate(images[1], 4), snn.simulate(images[1], 4))
    with torch.no_grad():
        assert torch.equal(rebuild_ann(loaded)(images[1]), tiny_vit(name, **kwargs)(images[1]))


def test_load_with_template_model(images, tmp_path):
    snn = transpike.convert(tiny_vit(), images[0])  # no model spec
    path = transpike.save(snn, tmp_path / "net.safetensors")
    with pytest.raises(ValueError, match="model=") as error:
        transpike.load(path)
    assert "net.safetensors" in str(error.value)
    loaded = transpike.load(path, model=tiny_vit(seed=7))  # any weights: only the architecture counts
    assert torch.equal(loaded.simulate(images[1], 3), snn.simulate(images[1], 3))


def test_rebuilt_ann_is_the_converted_ann(snn, images):
    with torch.no_grad():
        assert torch.equal(rebuild_ann(snn)(images[1]), tiny_vit()(images[1]))


def test_save_never_overwrites_silently(snn, tmp_path):
    path = tmp_path / "net.safetensors"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        transpike.save(snn, path)
    assert path.read_bytes() == b"precious"
    transpike.save(snn, path, overwrite=True)
    assert read_header(path)["format"] == "transpike.spiking-network"


def test_crash_mid_write_keeps_the_previous_file(snn, tmp_path, monkeypatch):
    path = transpike.save(snn, tmp_path / "net.safetensors")
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(transpike.io, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        transpike.save(snn, path, overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.safetensors"]


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_file_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(ValueError, match="not a transpike network file"):
        transpike.load(path)
    assert not marker.exists()


def test_torch_save_file_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="not a transpike network file"):
        transpike.load(path)


def test_foreign_safetensors_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="not one written by transpike"):
        transpike.load(path)


def test_newer_version_is_refused(snn, tmp_path):
    path = tmp_path / "net.safetensors"
    header = json.loads(json.dumps(dict(format="transpike.spiking-network", version=99, transpike="9.0")))
    save_file({"w": torch.ones(2)}, path, metadata={"transpike": json.dumps(header)})
    with pytest.raises(ValueError, match="version 99"):
        transpike.load(path)


def test_truncated_and_missing_files(snn, tmp_path):
    path = transpike.save(snn, tmp_path / "net.safetensors")
    data = path.read_bytes()
    for cut in (0, 7, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"net\.safetensors"):
            transpike.load(path)
    with pytest.raises(ValueError, match="no such file"):
        transpike.load(tmp_path / "absent.safetensors")


def test_wrong_architecture_is_refused(snn, tmp_path):
    path = transpike.save(snn, tmp_path / "net.safetensors")
    with pytest.raises(ValueError, match=r"net\.safetensors"):
        transpike.load(path, model=tiny_vit(depth=3))


def test_file_is_plain_safetensors(snn, tmp_path):
    path = transpike.save(snn, tmp_path / "net.safetensors")
    size = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + size])
    assert "blocks.0.attn.qkv.neuron.theta_pos" in header
    assert json.loads(header["__metadata__"]["transpike"])["model"] == SPEC
    assert os.path.getsize(path) > 0


def test_provenance_is_kept_and_is_not_the_network(images, tmp_path):
    """What calibration ran on is recorded by convert; what the caller adds (the data's name, the
    checkpoint) is kept beside it; both survive save/load, and neither changes the digest."""
    given = dict(calibration=dict(data="npz:/data/train.npz"), checkpoint=dict(path="w.pt", sha256="ab"))
    snn = transpike.convert(tiny_vit(), images[0].split(6), model_spec=SPEC, provenance=given)
    assert snn.provenance == dict(
        calibration=dict(data="npz:/data/train.npz", batches=6, samples=32, sample_shape=[3, 16, 16]),
        checkpoint=dict(path="w.pt", sha256="ab"),
    )
    assert given == dict(
        calibration=dict(data="npz:/data/train.npz"), checkpoint=dict(path="w.pt", sha256="ab")
    )
    loaded = transpike.load(transpike.save(snn, tmp_path / "net.safetensors"))
    assert loaded.provenance == snn.provenance and loaded.parallel().provenance == snn.provenance
    bare = transpike.convert(tiny_vit(), images[0].split(6), model_spec=SPEC)
    assert bare.provenance == dict(calibration=dict(batches=6, samples=32, sample_shape=[3, 16, 16]))
    assert bare.digest() == snn.digest()


def test_files_without_provenance_load_and_bad_provenance_is_refused(snn, tmp_path):
    path = transpike.save(snn, tmp_path / "net.safetensors")
    header, tensors = read_header(path), load_file(path)
    del header["provenance"]  # as files written before provenance was kept
    save_file(tensors, path, metadata={"transpike": json.dumps(header)})
    assert transpike.load(path).provenance == {}
    save_file(tensors, path, metadata={"transpike": json.dumps({**header, "provenance": "on Monday"})})
    with pytest.raises(ValueError, match=r"net\.safetensors: bad provenance in the header: 'on Monday'"):
        transpike.load(path)
