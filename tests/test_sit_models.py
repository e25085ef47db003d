"""The models SIT-conversion converts (EdgeNeXt, Next-ViT; METHODS.md §3.4): hybrids of convolution
and Transformer blocks, with cross-covariance attention (EdgeNeXt) and spatially reduced
attention normalized by BatchNorm (Next-ViT)."""

import pytest
import timm
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
from timm.models.edgenext import CrossCovarianceAttn
from timm.models.nextvit import EfficientAttention
from torch.utils.flop_counter import FlopCounterMode

import transpike
from transpike import ConversionOptions, prepare
from transpike.io import rebuild_ann
from transpike.rules.timm_edgenext import ExplicitCrossCovarianceAttn
from transpike.rules.timm_nextvit import ExplicitEfficientAttention

# 64 px: EdgeNeXt's stages see 16², 8², 4², 2² positions; Next-ViT's transformer blocks 8², 4², 2²
# queries attending to 4 reduced keys each. LayerScale at 1 (timm's init, 1e-6, would hide the
# blocks) and stage 2 with two blocks, so that blocks=k counts into it.
EDGENEXT = dict(
    dims=(16, 32, 32, 64), depths=(1, 2, 1, 1), heads=(2, 2, 2, 2), ls_init_value=1.0, num_classes=5
)
NEXTVIT = dict(depths=(1, 1, 5, 1), sr_ratios=(2, 2, 2, 1), num_classes=5)
SPECS = {
    "edgenext": {"timm": "edgenext_xx_small", "kwargs": EDGENEXT},
    # the "rw" layout: downsampling by the first block's strided depthwise convolution, an
    # overlapping stem, the final norm before the pool
    "edgenext_rw": {
        "timm": "edgenext_small_rw",
        "kwargs": dict(
            EDGENEXT, depths=(2, 2, 2, 2), downsample_block=True, stem_type="overlap", head_norm_first=True
        ),
    },
    "nextvit": {"timm": "nextvit_small", "kwargs": NEXTVIT},
}
FAMILIES = list(SPECS)


def build(family: str) -> torch.nn.Module:
    """A small random-init model of ``family`` whose attention matters (timm's init makes every
    softmax nearly uniform), with BatchNorm statistics that are not the identity."""
    torch.manual_seed(0)
    model = timm.create_model(SPECS[family]["timm"], **SPECS[family]["kwargs"]).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
            if isinstance(module, CrossCovarianceAttn):
                module.temperature.fill_(5)  # cosines times 5: scores in [-5, 5]
        spread_scores(model, torch.randn(4, 3, 64, 64))
    return model


def spread_scores(model: torch.nn.Module, x: torch.Tensor, spread: float = 3.0) -> None:
    """Scale each efficient attention's q and k, in forward order, so that its scores vary by about
    ``spread`` over the keys (ReLU features alike at every position make them nearly equal)."""
    for path, attn in model.named_modules():
        if isinstance(attn, EfficientAttention):
            prepared, seen = prepare(model, ConversionOptions()), []
            softmax = prepared.get_submodule(f"{path}.softmax")
            softmax.register_forward_hook(lambda m, i, o, seen=seen: seen.append(i[0]))
            prepared(x)
            factor = (spread / seen[0].std(-1).mean()).sqrt()
            attn.q.weight.mul_(factor)
            attn.k.weight.mul_(factor)


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


def softmax_spread(model: torch.nn.Module, x: torch.Tensor) -> float:
    """The largest attention weight the model gives, to show that its softmax is not uniform."""
    prepared = prepare(model, ConversionOptions())
    found = []
    hooks = [m.register_forward_hook(lambda m, i, o: found.append(o.max().item())) for m in prepared.modules()
             if isinstance(m, torch.nn.Softmax)]  # fmt: skip
    prepared(x)
    for hook in hooks:
        hook.remove()
    return min(found)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_attention_twins_compute_what_timm_does(family, inputs):
    model = build(family)
    prepared = prepare(model, ConversionOptions())
    twin = ExplicitCrossCovarianceAttn if family.startswith("edgenext") else ExplicitEfficientAttention
    assert sum(isinstance(m, twin) for m in prepared.modules()) == 3
    with torch.no_grad():
        assert softmax_spread(model, inputs[1]) > 0.5
        for fused in (True, False):
            for module in model.modules():
                if hasattr(module, "fused_attn"):
                    module.fused_attn = fused
            assert torch.allclose(prepared(inputs[1]), model(inputs[1]), atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_sit_models_converge(family, options, inputs):
    # one spike per step: 0.05-0.11 after 32 steps, as the CPU's rounding moves spike decisions
    # (edgenext_rw: 0.106 on an AMD EPYC with AVX2, below 0.1 on the machines before it)
    direct = "stem.0.conv" if family == "nextvit" else "stem.0"
    assert_converts(build(family), *inputs, options, direct, products=3 * 2, burst=0.005)


def test_cross_covariance_normalizations_become_ec_modules(inputs):
    snn = transpike.convert(build("edgenext"), inputs[0])
    ec = {r.path for r in snn.report().by_role("ec")}
    assert {"stages.1.blocks.1.xca.q_norm", "stages.1.blocks.1.xca.k_norm"} <= ec


def test_sit_replaces_every_softmax(inputs):
    for family in ("edgenext", "nextvit"):
        snn = transpike.convert(build(family), inputs[0], method="sit")
        softmaxes = [m for m in snn.network.modules() if isinstance(m, transpike.sit.SpikingSoftmax)]
        assert len(softmaxes) == 3
        assert not any(isinstance(m, torch.nn.Softmax) for m in snn.network.modules())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("blocks", [None, 2])
def test_every_module_passes_rates_like_increments(family, blocks, inputs):
    """One link over the whole network: every converted module emits rates but the classifier (or
    the head, left analog by blocks=k), and linked = unlinked."""
    calibration, x = inputs
    linked = transpike.convert(build(family).double(), calibration.double(), blocks=blocks)
    network = linked.network
    output = network.head if blocks is not None else network.head.fc
    assert all(m.emits_rate for m in emitters(network) if m is not output) and not output.emits_rate
    assert_links_keep_outputs(linked, x.double())


@pytest.mark.parametrize("family", ["edgenext", "nextvit"])
def test_round_trip_and_accounting(family, tmp_path, inputs):
    calibration, x = inputs
    snn = transpike.convert(build(family), calibration, method="sit", model_spec=SPECS[family])
    loaded = transpike.load(transpike.save(snn, tmp_path / "net.safetensors"))
    assert torch.equal(loaded.simulate(x, 4), snn.simulate(x, 4))
    with torch.no_grad():
        assert torch.equal(rebuild_ann(loaded)(x), build(family)(x))
    report = transpike.account(snn, x, 3)
    assert sum(row["kind"] == "product" for row in report.layers) == 3 * 2
    assert all(row["snn_acs"][0] > 0 for row in report.layers)


def test_the_position_encoding_is_a_constant_counted_for_neither(inputs):
    """EdgeNeXt's Fourier position encoding depends on the grid's size alone: it is reported as a
    constant, and the ANN's MACs are all the MACs timm's model runs except its projection's."""
    calibration, x = inputs
    model = build("edgenext")
    snn = transpike.convert(model, calibration)
    assert [row.path for row in snn.report().by_role("constant")] == ["stages.1.blocks.1.pos_embd"]
    report = transpike.account(snn, x, 2)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x[:1])
    projection = model.stages[1].blocks[1].pos_embd.token_projection
    assert (
        report.ann_macs
        == counter.get_total_flops() / 2 - projection.in_channels * projection.out_channels * 8 * 8
    )
    assert not any("pos_embd" in row["path"] for row in report.analog)


@pytest.mark.parametrize("family", ["edgenext", "nextvit"])
def test_blocks_convert_stage_by_stage(family, inputs):
    """``blocks=k`` counts every stage's blocks in turn, convolution blocks included (SIT's
    block-by-block conversion); a later stage, with its downsampling, and the head stay analog."""
    calibration, x = inputs
    model = build(family)
    ref = ann_output(model, x)
    paths = [
        f"stages.{s}.blocks.{b}" for s, stage in enumerate(model.stages) for b, _ in enumerate(stage.blocks)
    ]
    for k in range(len(paths) + 1):
        snn = transpike.convert(model, calibration, blocks=k, neuron="burst", threshold="mse")
        analog = [row.path for row in snn.report().analog]
        assert analog[:1] == paths[k : k + 1] and (k == len(paths)) == (not analog)
        if k == 2 and family == "edgenext":  # inside stage 2: stages 3 and 4, the head analog
            assert analog == ["stages.1.blocks.1", "stages.2", "stages.3", "head"]  # norm_pre: an Identity
        assert relative_error(snn.simulate(x, 16)[-1], ref) < (1e-5 if k == 0 else 0.01)
