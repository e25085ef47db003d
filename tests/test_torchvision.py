"""torchvision's Vision Transformer and Swin Transformer (V1 and V2), and torch's ``nn.MultiheadAttention``:
the explicit attention twins, conversion, rate links, ``blocks=k``, files and the command line."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    ann_output,
    assert_converts,
    assert_links_keep_outputs,
    emitters,
    random_images,
    relative_error,
)
from torch import nn
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2
from torchvision.models.vision_transformer import VisionTransformer
from torchvision.ops.misc import Conv2dNormActivation

import transpike
from transpike import ConversionError, ConversionOptions, prepare
from transpike.io import rebuild_ann
from transpike.models import build_model, create_model, model_spec
from transpike.rules.torch_transformer import ExplicitMultiheadAttention

SHAPE = dict(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=5)


def build(**kwargs) -> VisionTransformer:
    """A small random-init torchvision ViT (16 patches and the class token) whose head is not zero
    (torchvision's init) and whose attention matters: scores spread over the keys."""
    torch.manual_seed(0)
    model = VisionTransformer(**{**SHAPE, **kwargs}).eval()
    with torch.no_grad():
        nn.init.normal_(model.heads.head.weight, std=0.3)
        model.encoder.pos_embedding.normal_(0, 0.5)
        model.class_token.normal_(0, 0.5)
        for layer in model.encoder.layers:
            layer.self_attention.in_proj_weight.mul_(3)
    return model


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_the_twin_computes_what_multihead_attention_does(batch_first, bias):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, bias=bias, batch_first=batch_first).eval()
    twin = ExplicitMultiheadAttention(mha)
    x, unbatched = torch.randn(3, 7, 16), torch.randn(7, 16)
    with torch.no_grad():
        for fast in (True, False):  # torch's fused kernel, or its step-by-step function
            torch.backends.mha.set_fastpath_enabled(fast)
            try:
                for q in (x, unbatched):
                    out, weights = twin(q, q, q)
                    assert torch.allclose(out, mha(q, q, q, need_weights=False)[0], atol=1e-6)
                    assert weights is None
            finally:
                torch.backends.mha.set_fastpath_enabled(True)
    assert twin.qkv.weight is mha.in_proj_weight and twin.out_proj.weight is mha.out_proj.weight


def test_the_twin_refuses_masks_and_cross_attention():
    twin = ExplicitMultiheadAttention(nn.MultiheadAttention(8, 2, batch_first=True))
    x, y = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="converts as self-attention"):
        twin(x, y, y)
    with pytest.raises(ValueError, match="masks are not supported"):
        twin(x, x, x, attn_mask=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="masks are not supported"):
        twin(x, x, x, key_padding_mask=torch.zeros(2, 3, dtype=torch.bool))


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda m: setattr(m, "add_zero_attn", True), "add_zero_attn=True"),
        (lambda m: setattr(m, "bias_k", nn.Parameter(torch.zeros(1, 1, 32))), "add_bias_kv=True"),
        (lambda m: setattr(m, "_qkv_same_embed_dim", False), "separate key and value projections"),
    ],
)
def test_unsupported_multihead_attention_is_refused_by_path(change, reason, inputs):
    model = build()
    change(model.encoder.layers[1].self_attention)
    with pytest.raises(ConversionError, match=reason) as error:
        transpike.convert(model, inputs[0])
    assert "encoder.layers.encoder_layer_1.self_attention" in str(error.value)
    assert "MultiheadAttention" in str(error.value)


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_torchvision_vit_converges(options, inputs):
    snn = assert_converts(build(), *inputs, options, direct="conv_proj", products=2 * 2)
    ec = {r.path for r in snn.report().by_role("ec")}
    assert ec >= {"encoder.ln", "encoder.layers.encoder_layer_1.mlp.1"}


def test_pre_logits_and_tanh_convert(inputs):
    """``representation_size``: the heads are a pre-logits Linear, a Tanh (an EC module) and the head."""
    calibration, x = inputs
    model = build(representation_size=12)
    snn = transpike.convert(model, calibration, neuron="burst", threshold="mse")
    assert {"heads.pre_logits", "heads.head"} <= {r.path for r in snn.report().by_role("mt+weight")}
    assert "heads.act" in {r.path for r in snn.report().by_role("ec")} and not snn.report().analog
    assert relative_error(snn.simulate(x, 16)[-1], ann_output(model, x)) < 0.01


def test_conv_stem_converts_but_for_its_first_convolution(inputs):
    """The conv-stem ViT (Xiao et al. 2021): 3x3 convolutions with BatchNorm and ReLU, then a 1x1
    convolution; the first sees the image, the others get MT neurons, the ReLUs are EC modules."""
    from torchvision.models.vision_transformer import ConvStemConfig

    stem = [ConvStemConfig(out_channels=8, kernel_size=3, stride=2)] + [ConvStemConfig(16, 3, 2)] * 2
    model = build(conv_stem_configs=stem)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2)
    calibration, x = inputs
    snn = transpike.convert(model, calibration, neuron="burst", threshold="mse")
    report = snn.report()
    assert [r.path for r in report.by_role("direct-input")] == ["conv_proj.conv_bn_relu_0.0"]
    layers = {r.path for r in report.by_role("mt+weight")}
    assert {"conv_proj.conv_bn_relu_1.0", "conv_proj.conv_last"} <= layers
    assert isinstance(model.conv_proj.conv_bn_relu_0, Conv2dNormActivation) and not report.analog
    assert relative_error(snn.simulate(x, 16)[-1], ann_output(model, x)) < 0.01


@pytest.mark.parametrize("blocks", [None, 1])
def test_every_module_passes_rates_like_increments(blocks, inputs):
    calibration, x = inputs
    linked = transpike.convert(build().double(), calibration.double(), blocks=blocks)
    network = linked.network
    output = network.heads if blocks is not None else network.heads.head
    assert all(m.emits_rate for m in emitters(network) if m is not output) and not output.emits_rate
    assert_links_keep_outputs(linked, x.double())


def test_blocks_count_the_encoder_layers(inputs):
    calibration, x = inputs
    model = build()
    ref = ann_output(model, x)
    layers = ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]
    for k in range(3):
        snn = transpike.convert(model, calibration, blocks=k, neuron="burst", threshold="mse")
        analog = [row.path for row in snn.report().analog]
        assert analog == ([*layers[k:], "encoder.ln", "heads"] if k < 2 else [])
        assert relative_error(snn.simulate(x, 16)[-1], ref) < (1e-5 if k == 0 else 0.01)
    with pytest.raises(ValueError, match="only 2 blocks"):
        transpike.convert(model, calibration, blocks=3)


def test_round_trip_keeps_the_ann_keys(tmp_path, inputs):
    """The twin holds the packed projection as ``qkv``; the rebuilt ANN has torch's
    ``in_proj_weight`` and ``in_proj_bias`` back, and the loaded network simulates bit for bit."""
    calibration, x = inputs
    model = build()
    snn = transpike.convert(model, calibration, method="sit")
    loaded = transpike.load(transpike.save(snn, tmp_path / "net.safetensors"), model=build())
    assert torch.equal(loaded.simulate(x, 4), snn.simulate(x, 4))
    state = loaded.ann_state_dict()
    assert state.keys() == model.state_dict().keys()
    with torch.no_grad():
        assert torch.equal(rebuild_ann(loaded, VisionTransformer(**SHAPE))(x), model(x))


def test_ann_macs_are_the_vits_closed_form(inputs):
    """Patch projection, then per layer qkv, Q·Kᵀ, attn·V, the output projection and the MLP,
    then the head: (tokens N = 17, width D = 32, MLP width M = 64)."""
    calibration, x = inputs
    report = transpike.account(transpike.convert(build(), calibration), x, 2)
    n, d, m = 17, 32, 64
    layer = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * m
    assert report.ann_macs == 16 * d * 3 * 8 * 8 + 2 * layer + d * 5
    assert all(row["snn_acs"][0] > 0 for row in report.layers)


def test_models_by_name():
    """``torchvision:NAME`` builds torchvision's model with random weights, and a saved network's
    spec rebuilds it; unknown names name similar ones."""
    spec = model_spec("torchvision:vit_b_32", {"image_size": 32, "num_classes": 4})
    assert spec == {"torchvision": "vit_b_32", "kwargs": {"image_size": 32, "num_classes": 4}}
    model = build_model(spec)
    assert isinstance(model, VisionTransformer) and model.image_size == 32 and not model.training
    same = create_model("torchvision:vit_b_32", {"image_size": 32, "num_classes": 4})
    assert all(torch.equal(a, same.state_dict()[key]) for key, a in model.state_dict().items())
    with pytest.raises(ValueError, match="unknown torchvision model 'torchvision:vit_q_16'; similar: torch"):
        create_model("torchvision:vit_q_16")
    with pytest.raises(ValueError, match="image_size"):
        create_model("torchvision:vit_b_32", {"image_size": "x"})


SWIN_BLOCKS = {"v1": {}, "v2": dict(block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2)}


def build_swin(version: str = "v1") -> SwinTransformer:
    """A small torchvision Swin (windows of 4, two stages) whose attention matters; V2 with q, k
    and v biases (torchvision drops k's), temperatures and position-bias MLPs spread out."""
    torch.manual_seed(0)
    model = SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=[4, 4],
        num_classes=5,
        **SWIN_BLOCKS[version],
    ).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "relative_position_bias_table" in name or "cpb_mlp" in name or name.endswith("qkv.bias"):
                parameter.normal_(0, 1.0)
            if name.endswith("logit_scale"):
                parameter.normal_(1.5, 1.0)
            if name.endswith("qkv.weight"):
                parameter.mul_(3)
            if name == "head.weight":
                parameter.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("version", SWIN_BLOCKS)
@pytest.mark.parametrize("size", [32, 36, 20])  # 8x8 tokens, 9x9 (padded to 12x12), 5x5 (to 8x8)
def test_the_swin_twin_computes_what_torchvision_does(version, size):
    model = build_swin(version)
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
        assert relative_error(prepare(model, ConversionOptions())(x), ref) < 1e-6
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if n.endswith("qkv.bias"))  # untouched


@pytest.fixture
def swin_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(36, (16, 4))


@pytest.mark.parametrize("version", SWIN_BLOCKS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_torchvision_swin_converges(version, options, swin_inputs):
    """4 blocks × 2 products; V2's cosine attention adds 2 EC modules (Q̂, K̂) per block."""
    snn = assert_converts(
        build_swin(version), *swin_inputs, options, "features.0.0", 4 * 2, tolerance=0.1, burst=0.005
    )
    normalizations = [r for r in snn.report().by_role("ec") if r.path.endswith(("q_norm", "k_norm"))]
    assert len(normalizations) == (8 if version == "v2" else 0)


@pytest.mark.parametrize("version", SWIN_BLOCKS)
def test_torchvision_swin_passes_rates_and_round_trips(version, swin_inputs, tmp_path):
    calibration, x = swin_inputs
    linked = transpike.convert(build_swin(version).double(), calibration.double())
    head = linked.network.head
    assert all(m.emits_rate for m in emitters(linked.network) if m is not head) and not head.emits_rate
    assert_links_keep_outputs(linked, x.double())
    snn = transpike.convert(build_swin(version), calibration)
    loaded = transpike.load(transpike.save(snn, tmp_path / "swin.safetensors"), model=build_swin(version))
    assert torch.equal(loaded.simulate(x, 3), snn.simulate(x, 3))
    with torch.no_grad():
        assert torch.equal(rebuild_ann(loaded, build_swin(version))(x), build_swin(version)(x))


@pytest.mark.parametrize("version", SWIN_BLOCKS)
def test_torchvision_swin_blocks_count_stage_by_stage(version, swin_inputs):
    """blocks=k counts the Swin blocks in ``features`` stage by stage: a later stage, the patch
    merging before it, the final norm and the head stay analog (on rates); linked = unlinked."""
    calibration, x = swin_inputs
    model = build_swin(version)
    ref = ann_output(model, x)
    tail = ["norm", "head"]
    expected = {
        1: ["features.1.1", "features.2", "features.3", *tail],
        2: ["features.3.0", "features.3.1", *tail],
        4: [],
    }
    for k, analog in expected.items():
        snn = transpike.convert(model, calibration, blocks=k, neuron="burst", threshold="mse")
        assert [row.path for row in snn.report().analog] == analog
        assert relative_error(snn.simulate(x, 16)[-1], ref) < 0.005
    linked = transpike.convert(build_swin(version).double(), calibration.double(), blocks=2)
    assert_links_keep_outputs(linked, x.double())


def test_torchvision_swin_v2_by_name():
    """``swin_v2_t`` as the command line builds it (windows of 8 at 64 px: one window, no shift, in
    the later stages) converts and keeps torchvision's keys."""
    model = create_model("torchvision:swin_v2_t", {"num_classes": 3})
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    snn = transpike.convert(model, x)
    assert len(snn.report().by_role("mt×mt+product-ec")) == 12 * 2 and not snn.report().analog
    assert set(snn.ann_state_dict()) == set(model.state_dict())
