import copy

import pytest
import timm
import torch

from transpike import ExpectationCompensation, SpikingLayer, SpikingProduct
from transpike.rates import link_rates

# The GPU path runs where CUDA is present (the device machine); CI has the CPU only.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
TINY = dict(img_size=16, patch_size=4, embed_dim=24, depth=2, num_heads=3, num_classes=5)


def tiny_vit(name: str = "vit_tiny_patch16_224", seed: int = 0, **kwargs) -> torch.nn.Module:
    """A random-init timm ViT small enough for unit tests (16 px, 17 tokens, 2 blocks)."""
    torch.manual_seed(seed)
    return timm.create_model(name, **{**TINY, **kwargs}).eval()


def ann_output(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The ANN's output on x: the reference spiking outputs are compared with."""
    with torch.no_grad():
        return model(x)


def relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y - ref).norm() / ref.norm()).item()


def assert_converges(y: torch.Tensor, ref: torch.Tensor, tolerance: float = 0.1) -> None:
    """The mean output after all T steps is within ``tolerance`` of ref and closer than after 4."""
    assert relative_error(y[-1], ref) < tolerance
    assert relative_error(y[-1], ref) < relative_error(y[3], ref)


def emitters(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of a converted network that can emit rates."""
    kinds = (SpikingLayer, ExpectationCompensation, SpikingProduct)
    return [m for m in network.modules() if isinstance(m, kinds)]


def assert_links_keep_outputs(linked, x: torch.Tensor, steps: int = 6):
    """A converted network (float64) whose modules pass rates along their links gives the outputs
    of its copy with every link undone (increments everywhere); returns that copy."""
    plain = copy.deepcopy(linked)
    link_rates(plain.network, enabled=False)
    assert torch.allclose(linked.simulate(x, steps), plain.simulate(x, steps), rtol=1e-9, atol=1e-9)
    return plain


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    """(calibration batch, evaluation batch) of random images for TINY models."""
    gen = torch.Generator().manual_seed(123)
    return torch.randn(32, 3, 16, 16, generator=gen), torch.randn(6, 3, 16, 16, generator=gen)
