"""torchvision's MaxViT: MBConv blocks with squeeze-and-excitation (a product of two spiking
operands), block and grid attention with learned biases per relative offset, the classifier's
LayerNorm and Tanh; the twins, conversion, rate links, ``blocks=k`` over MaxViT layers, save/load,
and ``maxvit_t`` by name with its preprocessing at the size it was built for."""

import numpy as np
import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks,
    assert_converts,
    assert_links_keep_outputs,
    assert_rates_up_to,
    assert_round_trip,
    assert_twin_matches,
    draw,
    random_images,
    spread,
)
from PIL import Image
from torchvision.models.maxvit import MaxVit, RelativePositionalMultiHeadAttention

import transpike
from transpike.data import load_dataset
from transpike.models import create_model
from transpike.rules.squeeze_excite import ExplicitSqueezeExcite
from transpike.rules.torchvision_maxvit import ExplicitRelativeAttention

#: at 32 px: a 16×16 stem, then stages of one layer on 8×8 and two on 4×4, partitions of 2×2
TINY = dict(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16, 32])
TINY["block_layers"] = [1, 2]


def build() -> MaxVit:
    """A small random-init MaxViT whose attention matters: biases per offset spread out, q and k
    scaled up, the branches' last layers drawn large."""
    torch.manual_seed(0)
    model = MaxVit(**TINY, head_dim=4, stochastic_depth_prob=0.0, num_classes=5).eval()
    draw(model, "relative_position_bias_table", 1.0)
    return spread(model, ("merge.weight", "mlp_layer.3.weight", "conv_c.weight", "classifier.5.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32)


def test_the_twins_compute_what_torchvision_does(inputs):
    """Block and grid attention in each of three layers; one squeeze-and-excitation per layer."""
    model = build()
    assert_twin_matches(model, inputs[1], RelativePositionalMultiHeadAttention, ExplicitRelativeAttention, 6)
    prepared = transpike.prepare(model, transpike.ConversionOptions())
    assert sum(isinstance(m, ExplicitSqueezeExcite) for m in prepared.modules()) == 3


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_maxvit_converts(options, inputs):
    """The stem's first convolution reads the image; 3 layers × (2 attentions × 2 products + the
    squeeze-and-excitation's gating); its SiLU and sigmoid, the GELUs, LayerNorms and the
    classifier's Tanh are EC modules."""
    snn = assert_converts(build(), *inputs, options, direct="stem.0.0", products=3 * 5)
    report = snn.report()
    se = "blocks.0.layers.0.layers.MBconv.layers.squeeze_excitation"
    assert f"{se}.gating" in {r.path for r in report.by_role("mt×mt+product-ec")}
    ec = {r.path for r in report.by_role("ec")}
    assert {f"{se}.activation", f"{se}.scale_activation", "classifier.2", "classifier.4"} <= ec
    weights = {r.path for r in report.by_role("mt+weight")}
    assert {"stem.1.0", f"{se}.fc1", "blocks.1.layers.0.layers.MBconv.proj.1", "classifier.5"} <= weights


def test_every_module_passes_rates_like_increments(inputs):
    assert_rates_up_to(build(), *inputs, outputs=("classifier.5",))


def test_blocks_count_maxvit_layers_and_round_trip(tmp_path, inputs):
    """blocks=k counts MaxViT layers stage by stage; from the first analog layer on, everything
    stays analog, the classifier as one module; linked = unlinked. Save/load keeps the keys."""
    calibration, x = inputs
    expected = {
        1: ["blocks.1.layers.0", "blocks.1.layers.1", "classifier"],
        2: ["blocks.1.layers.1", "classifier"],
        3: [],
    }
    assert_blocks(build(), calibration, x, expected)
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=1), x.double())
    snn = transpike.convert(build(), calibration, method="sit")
    assert_round_trip(snn, build, x, tmp_path / "maxvit.safetensors")


def test_maxvit_t_by_name_and_its_input_size(tmp_path):
    """``maxvit_t`` as the command line builds it converts with nothing analog and torchvision's
    keys; image folders are preprocessed at the size the model was built for, which is the only
    one it takes."""
    model = create_model("torchvision:maxvit_t", {"num_classes": 3})
    snn = transpike.convert(model, torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    assert len(snn.report().by_role("mt×mt+product-ec")) == 11 * 5 and not snn.report().analog
    assert set(snn.ann_state_dict()) == set(model.state_dict())
    (tmp_path / "cat").mkdir()
    Image.fromarray(np.zeros((300, 500, 3), dtype=np.uint8)).save(tmp_path / "cat" / "0.png")
    larger = create_model("torchvision:maxvit_t", {"num_classes": 3, "input_size": (448, 448)})
    for size, network in ((224, model), (448, larger)):
        image, _ = load_dataset(f"imagefolder:{tmp_path}", model=network)[0]
        assert image.shape == (3, size, size)
