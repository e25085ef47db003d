"""Same input, same answer: batch independence, repeatability, and long runs."""

from pathlib import Path

import torch
from conftest import ann_output, relative_error, tiny_vit
from torch.utils.data import TensorDataset

import transpike
from transpike.evaluate import evaluate


def test_prediction_does_not_depend_on_batch_mates(images):
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration, threshold="mse", rounding="nearest")
    together = snn.simulate(x, 8)
    alone = torch.cat([snn.simulate(x[i : i + 1], 8) for i in range(len(x))], dim=1)
    assert torch.equal(together.argmax(-1), alone.argmax(-1))
    assert torch.allclose(together, alone, atol=1e-4)
    shuffled = snn.simulate(x.flip(0), 8).flip(1)
    assert torch.allclose(together, shuffled, atol=1e-4)


def test_evaluation_is_identical_for_any_batch_size(images):
    calibration, _ = images
    model = tiny_vit()
    snn = transpike.convert(model, calibration)
    gen = torch.Generator().manual_seed(9)
    data = TensorDataset(torch.randn(30, 3, 16, 16, generator=gen), torch.randint(0, 5, (30,), generator=gen))
    results = [evaluate(snn, model, data, 6, batch_size=b, progress=False) for b in (1, 7, 30)]
    for other in results[1:]:
        assert other["snn_top1"] == results[0]["snn_top1"] and other["ann_top1"] == results[0]["ann_top1"]
        assert other["energy"].acs == results[0]["energy"].acs


def test_repeated_conversions_and_runs_are_bit_identical(images):
    calibration, x = images
    first = transpike.convert(tiny_vit(), calibration).simulate(x, 5)
    for _ in range(2):
        assert torch.equal(transpike.convert(tiny_vit(), calibration).simulate(x, 5), first)


def test_state_is_isolated_between_inputs(images):
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration)
    fresh = snn.simulate(x[:2], 4)
    snn.simulate(x[2:] * 5, 9)  # a different input and length in between
    assert torch.equal(snn.simulate(x[:2], 4), fresh)
    snn.reset()
    steps = torch.stack([snn.step(x[:2]) for _ in range(4)])
    assert torch.allclose(steps.double().cumsum(0)[-1] / 4, fresh[-1].double(), atol=1e-6)


def test_long_runs_keep_converging_without_drift(images):
    calibration, x = images
    model = tiny_vit()
    ref = ann_output(model, x)
    snn = transpike.convert(model, calibration)
    y = snn.simulate(x, 1024)
    errors = [relative_error(y[t - 1], ref) for t in (16, 64, 256, 1024)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.01
    # float32 accumulation over 1024 steps adds no drift: the error matches a float64 simulation's
    exact = transpike.convert(model.double(), calibration.double()).simulate(x.double(), 1024)
    assert errors[-1] < 1.5 * relative_error(exact[-1], ref.double())


def test_memory_does_not_grow_with_steps(images):
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration)
    snn.simulate(x, 2)
    short = snn.state_bytes()
    snn.simulate(x, 300)
    assert snn.state_bytes() == short > 0


def _peak_growth_mib(run) -> float:
    """Growth of the process's peak resident memory while ``run()`` runs (Linux /proc)."""

    def peak() -> float:
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024

    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current resident size
    before = peak()
    run()
    return peak() - before


def test_process_memory_does_not_grow_with_steps(images):
    gen = torch.Generator().manual_seed(0)
    snn = transpike.convert(tiny_vit(), images[0])
    x = torch.randn(256, 3, 16, 16, generator=gen)  # activations large enough to leave the small heap
    snn.simulate(x, 64)
    short = _peak_growth_mib(lambda: snn.simulate(x, 64))
    long = _peak_growth_mib(lambda: snn.simulate(x, 1024))
    output_mib = 1024 * x.shape[0] * 5 * 4 / 2**20  # the returned [T, B, classes] float32 tensor
    assert long - short < output_mib + 6
