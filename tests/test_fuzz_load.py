"""Fuzzing transpike.load with corrupted, truncated and foreign files: always a clear ValueError."""

import json
import pickle
import random

import pytest
import torch
from conftest import TINY, tiny_vit

import transpike
from transpike.predictions import load_predictions, save_predictions


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    gen = torch.Generator().manual_seed(0)
    snn = transpike.convert(tiny_vit(), torch.randn(8, 3, 16, 16, generator=gen),
                            model_spec={"timm": "vit_tiny_patch16_224", "kwargs": TINY})  # fmt: skip
    return transpike.save(snn, tmp_path_factory.mktemp("fuzz") / "net.safetensors").read_bytes()


def damaged(data: bytes, rng: random.Random):
    """Any safetensors file with flipped bytes, truncated, or replaced by random bytes or a pickle."""
    header_end = 8 + int.from_bytes(data[:8], "little")
    for _ in range(25):  # flipped bytes, in the header and in the tensors
        blob = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(header_end) if rng.random() < 0.7 else rng.randrange(len(blob))
            blob[position] = rng.randrange(256)
        yield bytes(blob)
    for _ in range(10):
        yield data[: rng.randrange(len(data))]
    yield b""
    yield rng.randbytes(4096)
    yield (10**15).to_bytes(8, "little") + data[8:]  # a header length beyond the file
    yield pickle.dumps({"network": "x"})


def corruptions(data: bytes, rng: random.Random):
    """A saved network damaged, or with its header's description changed."""
    yield from damaged(data, rng)
    header_end = 8 + int.from_bytes(data[:8], "little")
    header = json.loads(data[8:header_end])
    changes = [{"version": 2}, {"format": "other"}, {"options": {"levels": -1}}, {"options": {"bogus": 1}}]
    for change in [*changes, {"model": {"timm": "no_such_model"}}]:
        meta = json.loads(header["__metadata__"]["transpike"])
        meta.update(change)
        yield encoded(header, {"transpike": json.dumps(meta)}, data[header_end:])


def test_corrupted_files_raise_value_error(valid_file, tmp_path):
    rng = random.Random(1234)
    path = tmp_path / "net.safetensors"
    failures = 0
    for blob in corruptions(valid_file, rng):
        path.write_bytes(blob)
        try:
            transpike.load(path)
        except ValueError as error:
            assert str(path) in str(error) or "model" in str(error)
            failures += 1
        # a flip inside tensor data can leave a loadable file: that is not an error
    assert failures >= 20


def test_corrupted_predictions_files_raise_value_error(tmp_path):
    rows = dict(labels=torch.arange(6), ann=torch.arange(6), snn=torch.arange(18).view(6, 3) % 6)
    path = save_predictions(rows, {"model": "m", "data": "d"}, tmp_path / "predictions.safetensors")
    data = path.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    header = json.loads(data[8:header_end])
    tampered = [dict(header["__metadata__"], about="[1, 2]"), dict(header["__metadata__"], about="{")]
    failures = 0
    for blob in [
        *damaged(data, random.Random(99)),
        *(encoded(header, meta, data[header_end:]) for meta in tampered),
    ]:
        path.write_bytes(blob)
        try:
            load_predictions(path)
        except ValueError as error:
            assert str(path) in str(error)
            failures += 1
    assert failures >= 20


def encoded(header: dict, metadata: dict, tensors: bytes) -> bytes:
    """A safetensors file of ``header`` with other ``metadata`` and the ``tensors`` bytes."""
    text = json.dumps(dict(header, __metadata__=metadata)).encode()
    return len(text).to_bytes(8, "little") + text + tensors


class Payload:
    """Unpickling this would run code: a weights-only reader must refuse it."""

    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on some random blobs
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupted_checkpoints_raise_value_error(tmp_path, suffix, capsys):
    from transpike.models import read_checkpoint

    rng = random.Random(4321)
    torch_file = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.randn(4, 4)}}, torch_file)
    data = torch_file.read_bytes()
    blobs = [b"", rng.randbytes(2048), pickle.dumps(Payload()), pickle.dumps({"w": 1})]
    blobs.append(data[: len(data) // 2])
    for _ in range(20):
        blob = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        blobs.append(bytes(blob))
    path = tmp_path / f"ckpt{suffix}"
    failures = 0
    for blob in blobs:
        path.write_bytes(blob)
        try:
            read_checkpoint(path)
        except ValueError as error:
            assert str(path) in str(error)
            failures += 1
    assert failures >= 5
    assert "code ran" not in capsys.readouterr().out
