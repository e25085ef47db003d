"""Swin Transformer (timm ``SwinTransformer``): window attention with a relative position bias,
shifted windows with their mask, padding, patch merging; and Swin V2 (``SwinTransformerV2``):
cosine attention, a position-bias MLP, residual post-norm."""

import pytest
import timm
import torch
from conftest import ann_output, assert_converges, assert_links_keep_outputs, random_images, relative_error

import transpike
from transpike import ConversionOptions, prepare
from transpike.io import rebuild_ann
from transpike.rules.timm_swin import ExplicitWindowAttention
from transpike.rules.timm_swinv2 import ExplicitCosineWindowAttention

# 40 px in patches of 4: a 10×10 grid in windows of 4, so stage 1 pads to 12×12 and shifts its
# second block's windows (the mask), and patch merging pads the 5×5 grid of stage 2
SWIN = dict(
    img_size=40, patch_size=4, window_size=4, embed_dim=24, depths=(2, 2), num_heads=(2, 4), num_classes=5
)
SPEC = {"timm": "swin_tiny_patch4_window7_224", "kwargs": SWIN}


def tiny_swin(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(SPEC["timm"], **{**SWIN, **kwargs}).eval()


SPEC_V2 = {
    "timm": "swinv2_tiny_window8_256",
    "kwargs": dict(img_size=40, window_size=4, embed_dim=24, depths=(2, 2), num_heads=(2, 4), num_classes=5),
}


def tiny_swin_v2() -> torch.nn.Module:
    """A 2-stage Swin V2 at 40 px (padding, shifted windows, patch merging of an odd grid), its
    residual post-norms at weight 1 (timm starts them at 0, which would hide every block)."""
    torch.manual_seed(0)
    model = timm.create_model(SPEC_V2["timm"], **SPEC_V2["kwargs"]).eval()
    with torch.no_grad():
        for stage in model.layers:
            for block in stage.blocks:
                block.norm1.weight.fill_(1.0)
                block.norm2.weight.fill_(1.0)
    return model


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(40, (16, 4))


def test_the_window_attention_twin_computes_what_timm_does(inputs):
    """With the bias and the mask added to the scores, the explicit attention is timm's (fused
    kernel or not), shifted windows and padding included."""
    model = tiny_swin()
    prepared = prepare(model, ConversionOptions())
    twins = [m for m in prepared.modules() if isinstance(m, ExplicitWindowAttention)]
    assert len(twins) == 4
    masked = [block.attn_mask is not None for stage in model.layers for block in stage.blocks]
    assert masked == [False, True, False, True]  # each stage's second block shifts its windows
    with torch.no_grad():
        for fused in (True, False):
            for module in model.modules():
                if hasattr(module, "fused_attn"):
                    module.fused_attn = fused
            assert torch.allclose(prepared(inputs[1]), model(inputs[1]), atol=1e-5)


@pytest.mark.parametrize("options", [{}, dict(neuron="burst", threshold="mse"), dict(method="sit")])
def test_swin_converges(options, inputs):
    calibration, x = inputs
    model = tiny_swin()
    ref = ann_output(model, x)
    snn = transpike.convert(model, calibration, **options)
    counts = snn.report().counts()
    # per block: qkv, proj, fc1, fc2; patch merging's reduction; the head
    assert counts["mt+weight"] == 4 * 4 + 1 + 1 and counts["mt×mt+product-ec"] == 4 * 2
    assert [r.path for r in snn.report().by_role("direct-input")] == ["patch_embed.proj"]
    y = snn.simulate(x, 32)
    assert_converges(y, ref, 0.05)
    if options.get("neuron") == "burst":
        assert relative_error(y[-1], ref) < 0.002


@pytest.mark.parametrize("pool", ["max", "avgmax"])
def test_swin_max_pools_become_ec_modules(pool, inputs):
    calibration, x = inputs
    model = tiny_swin(global_pool=pool)
    snn = transpike.convert(model, calibration, neuron="burst", threshold="mse")
    assert "head.global_pool.pool" in {r.path for r in snn.report().by_role("ec")}
    assert relative_error(snn.simulate(x, 16)[-1], ann_output(model, x)) < 0.01


@pytest.mark.parametrize(
    ("blocks", "pool"), [(None, "avg"), (1, "avg"), (2, "avg"), (3, "avg"), (None, "max")]
)
def test_swin_links_pass_rates_like_increments(blocks, pool, inputs):
    """norm1 hands qkv its rate through the shift, padding and windows, and each stage's residual
    stream passes rates from its writers (patch merging's reduction, the blocks' projections) to
    its readers (the blocks' norms, the next patch merging's norm or the final norm), up to the
    first module left analog; the final norm hands the head its rate (through the max pool's EC
    module when it has one): linked = unlinked."""
    calibration, x = inputs
    linked = transpike.convert(tiny_swin(global_pool=pool).double(), calibration.double(), blocks=blocks)
    network = linked.network
    if blocks is None:
        assert network.layers[0].blocks[1].attn.qkv.neuron.takes_rate
        first, second = network.layers
        assert first.blocks[0].attn.proj.emits_rate and second.downsample.norm.takes_rate
        assert second.downsample.reduction.emits_rate and network.norm.takes_rate
        assert second.downsample.norm.emits_rate and second.downsample.reduction.neuron.takes_rate
        assert network.norm.emits_rate and network.head.fc.neuron.takes_rate
        assert getattr(network.head.global_pool.pool, "emits_rate", False) == (pool == "max")
    if blocks == 2:  # stage 1 linked to its reader, stage 2 (blocks analog) not
        assert network.layers[0].blocks[1].mlp.fc2.emits_rate and network.layers[1].downsample.norm.takes_rate
        assert not network.layers[1].downsample.reduction.emits_rate
    assert_links_keep_outputs(linked, x.double())


@pytest.mark.parametrize("version", [1, 2])
def test_swin_round_trip_and_accounting(version, tmp_path, inputs):
    calibration, x = inputs
    build, spec = (tiny_swin, SPEC) if version == 1 else (tiny_swin_v2, SPEC_V2)
    snn = transpike.convert(build(), calibration, model_spec=spec)
    loaded = transpike.load(transpike.save(snn, tmp_path / "swin.safetensors"))
    assert torch.equal(loaded.simulate(x, 4), snn.simulate(x, 4))
    with torch.no_grad():
        assert torch.equal(rebuild_ann(loaded)(x), build()(x))
    report = transpike.account(snn, x, 3)
    products = [row["path"] for row in report.layers if row["kind"] == "product"]
    assert products == [
        f"layers.{s}.blocks.{b}.attn.{p}" for s in (0, 1) for b in (0, 1) for p in ("qk", "av")
    ]
    assert all(row["snn_acs"][0] > 0 for row in report.layers)
    # V2's position-bias MLP is a constant: counted nowhere
    assert not any("cpb_mlp" in row["path"] for row in report.layers + report.analog)


def test_swin_blocks_convert_stage_by_stage(inputs):
    """``blocks=k`` counts the blocks of every stage in turn; a later stage (patch merging
    included), the final norm and the head stay analog with them, computed on rates."""
    calibration, x = inputs
    model = tiny_swin()
    ref = ann_output(model, x)
    analog = {
        0: ["layers.0.blocks.0", "layers.0.blocks.1", "layers.1", "norm", "head"],
        1: ["layers.0.blocks.1", "layers.1", "norm", "head"],
        2: ["layers.1.blocks.0", "layers.1.blocks.1", "norm", "head"],  # stage 2's patch merging spikes
        3: ["layers.1.blocks.1", "norm", "head"],
        4: [],
    }
    for k, paths in analog.items():
        snn = transpike.convert(model, calibration, blocks=k, neuron="burst", threshold="mse")
        assert [row.path for row in snn.report().analog] == paths
        y = snn.simulate(x, 16)
        assert relative_error(y[-1], ref) < (1e-5 if k == 0 else 0.002)
    with pytest.raises(ValueError, match="blocks=5: the model has only 4 blocks"):
        transpike.convert(model, calibration, blocks=5)


def test_the_cosine_window_attention_twin_computes_what_timm_does(inputs):
    model = tiny_swin_v2()
    prepared = prepare(model, ConversionOptions())
    assert sum(isinstance(m, ExplicitCosineWindowAttention) for m in prepared.modules()) == 4
    with torch.no_grad():
        assert torch.allclose(prepared(inputs[1]), model(inputs[1]), atol=1e-5)
    assert type(model.layers[0].blocks[0].attn.cpb_mlp) is torch.nn.Sequential  # the user's model untouched


@pytest.mark.parametrize("options", [{}, dict(neuron="burst", threshold="mse"), dict(method="sit")])
def test_swin_v2_converges(options, inputs):
    """Cosine attention (q and k normalized by EC modules before the product), the position-bias
    MLP a constant, residual post-norm."""
    calibration, x = inputs
    model = tiny_swin_v2()
    ref = ann_output(model, x)
    snn = transpike.convert(model, calibration, **options)
    report = snn.report()
    assert report.counts()["mt+weight"] == 4 * 4 + 1 + 1 and report.counts()["mt×mt+product-ec"] == 4 * 2
    assert [r.path for r in report.by_role("constant")] == [
        f"layers.{s}.blocks.{b}.attn.cpb_mlp" for s in (0, 1) for b in (0, 1)
    ]
    assert {"layers.0.blocks.1.attn.q_norm", "layers.0.blocks.1.attn.k_norm"} <= {
        r.path for r in report.by_role("ec")
    }
    y = snn.simulate(x, 32)
    assert_converges(y, ref, 0.15)
    if options.get("neuron") == "burst":
        assert relative_error(y[-1], ref) < 0.005


@pytest.mark.parametrize("blocks", [None, 1, 2, 3])
def test_swin_v2_links_pass_rates_like_increments(blocks, inputs):
    """Post-norm streams: the blocks' norms and patch merging's norm write them, qkv, fc1 and the
    next reduction read them; the final norm hands the head its rate. Linked = unlinked."""
    calibration, x = inputs
    linked = transpike.convert(tiny_swin_v2().double(), calibration.double(), blocks=blocks)
    network = linked.network
    if blocks is None:
        first, second = network.layers
        assert first.blocks[1].norm2.emits_rate and first.blocks[1].mlp.fc1.neuron.takes_rate
        assert second.downsample.reduction.neuron.takes_rate and second.downsample.norm.emits_rate
        assert network.norm.emits_rate and network.head.fc.neuron.takes_rate
    plain = assert_links_keep_outputs(linked, x.double())
    assert blocks == 0 or linked.state_bytes() < plain.state_bytes()
