"""transpike info: what a saved network is, and where it came from."""

import hashlib
import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import transpike
from transpike import cli
from transpike.info import format_info, network_info

KWARGS = dict(img_size=16, patch_size=4, embed_dim=24, depth=1, num_heads=3, num_classes=4)


@pytest.fixture
def converted(tmp_path):
    """A network converted on the command line from a checkpoint, calibrated on an npz file."""
    gen = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=gen.random((10, 3, 16, 16), dtype=np.float32), y=np.arange(10) % 4)
    torch.manual_seed(1)
    save_file(timm.create_model("vit_tiny_patch16_224", **KWARGS).state_dict(), tmp_path / "w.safetensors")
    kwargs = [f"{k}={v}" for k, v in KWARGS.items()]
    argv = ["convert", "--model", "vit_tiny_patch16_224", "--model-kwargs", *kwargs,
            "--checkpoint", tmp_path / "w.safetensors", "--calib", f"npz:{tmp_path / 'calib.npz'}",
            "--calib-batch-size", 4, "--out", tmp_path / "net.safetensors"]  # fmt: skip
    assert cli.main([str(a) for a in argv]) == 0
    return tmp_path


def test_info_names_model_options_provenance_and_digest(converted, capsys):
    path = converted / "net.safetensors"
    kwargs = [f"{k}={v}" for k, v in KWARGS.items()]
    info = network_info(path)
    sha = hashlib.sha256((converted / "w.safetensors").read_bytes()).hexdigest()
    assert info["provenance"] == dict(
        calibration=dict(data=f"npz:{converted / 'calib.npz'}", batch_size=4, batches=3, samples=10,
                         sample_shape=[3, 16, 16]),
        checkpoint=dict(path=str(converted / "w.safetensors"), sha256=sha),
        command=f"transpike convert --model vit_tiny_patch16_224 --model-kwargs {' '.join(kwargs)} "
                f"--checkpoint {converted / 'w.safetensors'} --calib npz:{converted / 'calib.npz'} "
                f"--calib-batch-size 4 --out {path}",
    )  # fmt: skip
    assert info["model"] == dict(name="vit_tiny_patch16_224", kwargs=KWARGS)
    assert info["digest"] == transpike.load(path).digest() and info["bytes"] == path.stat().st_size
    assert info["report"]["counts"]["mt+weight"] == 4 + 1  # qkv, proj, fc1, fc2; the head
    assert info["ann_parameters"] == sum(
        p.numel() for p in timm.create_model("vit_tiny_patch16_224", **KWARGS).parameters()
    )
    capsys.readouterr()
    assert cli.main(["info", str(path)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == format_info(info)
    assert (
        f"calibrated on: npz:{converted / 'calib.npz'}, 10 samples of 3×16×16 in 3 batches, batch size 4"
        in printed
    )
    assert f"(SHA-256 {sha})" in printed and "blocks.0.attn.qkv" in printed
    assert "converted by: transpike convert --model vit_tiny_patch16_224" in printed
    assert cli.main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(info))


def test_eval_results_carry_the_provenance(converted):
    argv = ["eval", "--snn", converted / "net.safetensors", "--data", f"npz:{converted / 'calib.npz'}",
            "--time-steps", 2, "--no-energy", "--out", converted / "results"]  # fmt: skip
    assert cli.main([str(a) for a in argv]) == 0
    results = json.loads((converted / "results" / "results.json").read_text())
    assert results["provenance"] == network_info(converted / "net.safetensors")["provenance"]


def test_info_refuses_what_is_not_a_network(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{}")
    assert cli.main(["info", str(tmp_path / "results.json")]) == 2
    assert "results.json: not a transpike network file" in capsys.readouterr().err
    assert cli.main(["info", str(tmp_path / "absent.safetensors")]) == 2
    assert "absent.safetensors: no such file" in capsys.readouterr().err
