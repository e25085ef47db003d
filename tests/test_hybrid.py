"""Hybrid ViTs (timm ``HybridEmbed``): a CNN stem before the patch projection, converted like the
rest but for its first convolution, which sees the image at every step."""

import copy
import functools

import pytest
import timm
import torch
from conftest import ann_output, relative_error
from timm.layers import GroupNormAct, HybridEmbed, StdConv2d, StdConv2dSame
from timm.models.resnetv2 import ResNetV2
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_hybrid import ConvStem
from torch import nn

import transpike
from transpike import ConversionOptions, ExpectationCompensation, SpikingLayer, prepare
from transpike.io import rebuild_ann
from transpike.rates import link_rates
from transpike.rules.timm_cnn import plain_convolution

SIZE = 32


def resnetv2() -> nn.Module:
    """The ResNet-V2 stem of the R50+ViT hybrids, small: weight-standardized convolutions with
    TensorFlow "SAME" padding, GroupNorm, a max pool, bottlenecks with a downsampling branch."""
    norm = functools.partial(GroupNormAct, num_groups=4)
    return ResNetV2(
        (1, 1), (32, 64), num_classes=0, global_pool="", preact=False, stem_chs=16, stem_type="same",
        conv_layer=StdConv2dSame, norm_layer=norm,
    )  # fmt: skip


def resnet_features() -> nn.Module:
    """A timm ResNet-D through ``features_only`` (the resnet26d/50d hybrids' FeatureListNet)."""
    return timm.create_model("resnet10t", features_only=True, out_indices=[2])


def conv_stem() -> nn.Module:
    """The convolutional stem of vit_base_mci_224 (BatchNorm and GELU), small."""
    shape = dict(channels=(8, 16, 24), stride=(4, 2, 2), kernel_size=(4, 2, 2))
    return ConvStem(**shape, padding=0, act_layer=nn.GELU)


BACKBONES = {"resnetv2": resnetv2, "resnet-features": resnet_features, "conv-stem": conv_stem}


def hybrid(backbone: str) -> nn.Module:
    torch.manual_seed(0)
    embed = functools.partial(HybridEmbed, backbone=BACKBONES[backbone](), proj=backbone != "conv-stem")
    return VisionTransformer(
        img_size=SIZE, patch_size=1, embed_layer=embed, embed_dim=24, depth=2, num_heads=3, num_classes=5
    ).eval()


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return torch.randn(16, 3, SIZE, SIZE, generator=gen), torch.randn(4, 3, SIZE, SIZE, generator=gen)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_hybrid_converges_with_only_the_first_convolution_direct(backbone, inputs):
    model = hybrid(backbone)
    calibration, x = inputs
    ref = ann_output(model, x)
    with torch.no_grad():
        assert torch.allclose(prepare(model, ConversionOptions())(x), ref, atol=1e-5)
    snn = transpike.convert(model, calibration, neuron="burst", threshold="mse")
    direct = snn.report().by_role("direct-input")
    first_conv = next(path for path, m in model.named_modules() if isinstance(m, nn.Conv2d))
    assert [r.path for r in direct] == [first_conv]
    spiking = {r.path for r in snn.report().by_role("mt+weight")}
    convs = {path for path, m in model.patch_embed.named_modules() if isinstance(m, nn.Conv2d)}
    assert {f"patch_embed.{path}" for path in convs} - spiking == {first_conv}
    y = snn.simulate(x, 64)
    errors = [relative_error(y[t - 1], ref) for t in (4, 16, 64)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_hybrid_hands_its_projection_rate_to_the_stream(backbone, inputs):
    """With a projection, the embedding writes the residual stream with the blocks: its rate joins
    theirs (a per-step increment there would be read as a rate), and every converted module of the
    stem passes rates to the next; linked = unlinked outputs, with less state."""
    calibration, x = inputs
    linked = transpike.convert(hybrid(backbone).double(), calibration.double())
    plain = copy.deepcopy(linked)
    link_rates(plain.network, enabled=False)
    embed = linked.network.patch_embed
    projected = backbone != "conv-stem"
    assert linked.network.blocks[0].norm1.takes_rate == projected
    if projected:
        assert embed.proj.emits_rate and embed.proj.neuron.takes_rate
    stem = [m for m in embed.backbone.modules() if isinstance(m, (SpikingLayer, ExpectationCompensation))]
    assert len(stem) >= 4 and all(m.emits_rate == projected for m in stem)
    assert torch.allclose(linked.simulate(x.double(), 8), plain.simulate(x.double(), 8), rtol=1e-9, atol=1e-9)
    assert linked.state_bytes() < plain.state_bytes()


@pytest.mark.parametrize("cls, stride", [(StdConv2d, 1), (StdConv2dSame, 2)])
def test_plain_convolution_computes_what_the_standardized_one_does(cls, stride):
    torch.manual_seed(0)
    conv = cls(4, 6, 3, stride=stride, bias=True, eps=1e-5).double()
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(plain_convolution(conv)(x), conv(x), rtol=1e-12, atol=1e-12)


def test_parallel_weights_of_standardized_convolutions(inputs):
    """The 2n synapse copies of a weight-standardized convolution copy the weight it computes."""
    calibration, x = inputs
    snn = transpike.convert(hybrid("resnetv2").double(), calibration.double(), granularity="channel")
    parallel = snn.parallel()
    layers = {type(m.layer) for m in parallel.network.modules() if isinstance(m, transpike.ParallelLayer)}
    assert layers == {nn.Conv2d, timm.layers.Conv2dSame, nn.Linear}  # padding fixed or from the input size
    assert torch.allclose(parallel.simulate(x.double(), 6), snn.simulate(x.double(), 6), rtol=1e-9, atol=1e-9)


def test_registered_hybrid_round_trip(tmp_path, inputs):
    kwargs = dict(img_size=SIZE, patch_size=1, depth=1, embed_dim=24, num_heads=3, num_classes=5)
    spec = {"timm": "vit_tiny_r_s16_p8_224", "kwargs": kwargs}
    torch.manual_seed(0)
    model = timm.create_model(spec["timm"], **kwargs).eval()
    snn = transpike.convert(model, inputs[0], model_spec=spec)
    loaded = transpike.load(transpike.save(snn, tmp_path / "hybrid.safetensors"))
    assert torch.equal(loaded.simulate(inputs[1], 4), snn.simulate(inputs[1], 4))
    with torch.no_grad():
        assert torch.equal(rebuild_ann(loaded)(inputs[1]), model(inputs[1]))
