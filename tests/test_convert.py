"""Conversion of timm Vision Transformers: every configuration, equivalences, isolation, errors."""

import copy
import functools

import pytest
import torch
from conftest import DEVICES, ann_output, assert_converges, relative_error, tiny_vit
from timm.layers import Attention, AttentionPoolLatent, AttentionPoolPrr, GluMlp
from timm.models.vision_transformer import ParallelScalingBlock, ParallelThingsBlock, ResPostBlock
from torch import nn

import transpike
from transpike import ConversionError, ConversionOptions, prepare
from transpike.spikes import SpikeMonitor

CONFIGS = {
    "class-token": {},
    "avg-pool": dict(global_pool="avg", class_token=False),
    "register-tokens": dict(reg_tokens=2),
    "no-class-token-fc-norm": dict(class_token=False, global_pool="avg", fc_norm=True),
    "layer-scale": dict(init_values=0.1),
    "qk-norm": dict(qk_norm=True),
    "no-qkv-bias": dict(qkv_bias=False),
    "pre-norm-no-embed-class": dict(pre_norm=True, no_embed_class=True),
    "res-post-block": dict(block_fn=ResPostBlock),
    "glu-sigmoid-gate-last": dict(mlp_layer=GluMlp),
    "max-pool": dict(global_pool="max", class_token=False),
    "avgmax-pool-with-prefix": dict(global_pool="avgmax", pool_include_prefix=True),
    "prr-pool-no-final-norm": dict(global_pool="prr", final_norm=False),
    "attention-pool-no-final-norm": dict(global_pool="map", final_norm=False),
    "differential-attention": dict(attn_layer="diff", qk_norm=True),
    "parallel-things-blocks": dict(block_fn=ParallelThingsBlock, init_values=0.1),
    "parallel-scaling-one-out-proj": dict(
        block_fn=functools.partial(ParallelScalingBlock, fuse_out_proj=True), qkv_bias=True
    ),
}
MODELS = {name: ("vit_tiny_patch16_224", kw) for name, kw in CONFIGS.items()}
MODELS["deit"] = ("deit_tiny_patch16_224", {})
MODELS["deit-distilled"] = ("deit_tiny_distilled_patch16_224", {})
MODELS["parallel-scaling-rmsnorm"] = ("vit_base_patch16_xp_224", {})  # two out projections, qk-norm
MODELS["differential-parallel-scaling"] = ("vit_dpwee_patch16_reg1_gap_256", {})
# registered timm models whose parts the configurations above lack (at TINY size, random weights)
MODELS["dinov2-swiglu-packed"] = ("vit_giant_patch14_reg4_dinov2", {})
MODELS["aimv2-swiglu-rmsnorm"] = ("aimv2_large_patch14_224", {})
MODELS["siglip-attention-pool"] = ("vit_base_patch16_siglip_224", {})
# timm's Eva class; head_init_scale=1 so that the logits are not 1000 times smaller than the features
EVA = dict(head_init_scale=1.0)
MODELS["eva-giant"] = ("eva_giant_patch14_224", EVA)  # q and v biases, GELU MLP
MODELS["eva02-rope-glu"] = ("eva02_tiny_patch14_224", EVA)  # RoPE, packed SwiGLU
MODELS["eva02-three-projections-swiglu"] = ("eva02_base_patch14_224", EVA)  # and SwiGLU with its norm
POST_NORM_MIXED_ROPE = dict(EVA, use_post_norm=True, rope_type="mixed")
MODELS["eva02-post-norm-mixed-rope"] = ("eva02_tiny_patch14_224", POST_NORM_MIXED_ROPE)
GROUPED_QUERY = dict(EVA, attn_type="rope", qkv_fused=False, num_kv_heads=1)
MODELS["eva02-grouped-query-attention"] = ("eva02_tiny_patch14_224", GROUPED_QUERY)
MODELS["dinov3"] = ("vit_base_patch16_dinov3", EVA)
MODELS["pe-core-attention-pool"] = ("vit_pe_core_base_patch16_224", EVA)
MODELS["eva02-max-pool"] = ("eva02_tiny_patch14_224", dict(EVA, global_pool="max"))


def set_fused(model: nn.Module, fused: bool) -> None:
    for module in model.modules():
        if hasattr(module, "fused_attn"):  # timm's attentions, attention pools and parallel blocks
            module.fused_attn = fused


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("config", sorted(MODELS))
def test_prepared_twin_equals_ann(config, fused, images):
    name, kwargs = MODELS[config]
    model = tiny_vit(name, **kwargs)
    set_fused(model, fused)
    _, x = images
    with torch.no_grad():
        assert torch.allclose(prepare(model, ConversionOptions())(x), model(x), atol=1e-5)


@pytest.mark.parametrize("config", sorted(MODELS))
def test_snn_tends_to_ann(config, images):
    name, kwargs = MODELS[config]
    model = tiny_vit(name, **kwargs)
    calibration, x = images
    ref = ann_output(model, x)
    y = transpike.convert(model, calibration).simulate(x, 64)
    assert y.shape == (64, *ref.shape)
    errors = [relative_error(y[t - 1], ref) for t in (4, 16, 64)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.06


def test_distilled_deit_has_two_spiking_heads(images):
    snn = transpike.convert(tiny_vit("deit_tiny_distilled_patch16_224"), images[0])
    heads = [r.path for r in snn.report().by_role("mt+weight") if r.path.startswith("head")]
    assert heads == ["head", "head_dist"]


def test_report_lists_every_site(images):
    depth = 2
    snn = transpike.convert(tiny_vit(qk_norm=True), images[0])
    counts = snn.report().counts()
    # per block: qkv, proj, fc1, fc2; plus the head
    assert counts["mt+weight"] == 4 * depth + 1
    assert counts["mt×mt+product-ec"] == 2 * depth
    # per block: norm1, q_norm, k_norm, softmax, norm2, GELU; plus the final norm
    assert counts["ec"] == 6 * depth + 1
    assert counts["direct-input"] == 1
    assert "analog" not in counts
    assert "blocks.0.attn.qk" in str(snn.report())


def test_attention_scores_reach_the_softmax_as_rates(images):
    """Q·Kᵀ hands the softmax EC its rate in every converted attention (compensation.link_rates),
    but not without EC, where the softmax must see each step's scores."""
    calibration, _ = images
    for compensation in (True, False):
        snn = transpike.convert(tiny_vit(), calibration, compensation=compensation)
        links = [(b.attn.qk.emits_rate, b.attn.softmax.takes_rate) for b in snn.network.blocks]
        assert links == [(compensation, compensation)] * 2


def test_step_by_step_equals_simulate(images):
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration)
    y = snn.simulate(x, 6)
    snn.reset()
    steps = torch.stack([snn.step(x) for _ in range(6)])
    running_mean = steps.double().cumsum(0) / torch.arange(1, 7).view(-1, 1, 1)
    assert torch.allclose(y, running_mean.float(), atol=1e-6)


def test_rerun_after_reset_is_identical(images):
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration)
    first = snn.simulate(x, 5)
    snn.simulate(torch.randn_like(x), 3)  # something else in between
    assert torch.equal(snn.simulate(x, 5), first)


def test_original_model_is_untouched(images):
    model = tiny_vit()
    model.train()
    set_fused(model, True)
    before = copy.deepcopy(model.state_dict())
    types = [type(m) for m in model.modules()]
    transpike.convert(model, images[0])
    assert model.training
    assert [type(m) for m in model.modules()] == types
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.fused_attn for m in model.modules() if isinstance(m, Attention))


def test_gated_attention_product_is_converted():
    torch.manual_seed(0)
    model = nn.Sequential(Attention(24, num_heads=3, gated=True)).eval()
    x = torch.randn(4, 9, 24)
    snn = transpike.convert(model, torch.randn(16, 9, 24))
    assert [r.path for r in snn.report().by_role("mt×mt+product-ec")] == ["0.qk", "0.av", "0.gating"]
    ref = ann_output(model, x)
    y = snn.simulate(x, 64)
    assert relative_error(y[-1], ref) < 0.05 < relative_error(y[0], ref)


@pytest.mark.parametrize(
    "pool, kwargs",
    [
        (AttentionPoolLatent, dict(qk_norm=True, norm_layer=nn.LayerNorm)),
        (
            AttentionPoolLatent,
            dict(latent_len=2, pool_type="avg", pos_embed="abs", feat_size=9, q_proj=False),
        ),
        (AttentionPoolLatent, dict(out_features=0)),  # pre-logits mode: no projection, norm or MLP
        (AttentionPoolPrr, dict(pool_type="avg")),
        (AttentionPoolPrr, dict(pool_type="token", pre_norm=True)),
        (AttentionPoolPrr, dict(pool_type="avg", post_norm=True)),
    ],
)
def test_attention_pool_variants_are_converted(pool, kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(pool(24, num_heads=3, **kwargs)).eval()
    x = torch.randn(4, 9, 24)
    ref = ann_output(model, x)
    for fused in (True, False):
        set_fused(model, fused)
        with torch.no_grad():
            assert torch.allclose(prepare(model, ConversionOptions())(x), ref, atol=1e-5)
    snn = transpike.convert(model, torch.randn(16, 9, 24))
    assert [r.path for r in snn.report().by_role("mt×mt+product-ec")] == ["0.qk", "0.av"]
    y = snn.simulate(x, 64)
    assert relative_error(y[-1], ref) < 0.05 < relative_error(y[0], ref)


def test_max_pool_is_an_ec_module_and_keeps_the_keys(images):
    """global_pool="max": the pool becomes EC(TokenPool), the model's class a subclass whose pool
    calls it; the converted network's keys are still the ANN's."""
    model = tiny_vit(global_pool="max", class_token=False)
    snn = transpike.convert(model, images[0])
    row = [r for r in snn.report().rows if r.path == "token_pool"]
    assert [(r.module_type, r.role) for r in row] == [("TokenPool", "ec")]
    assert type(model).__name__ == "VisionTransformer" and not hasattr(model, "token_pool")
    assert set(snn.ann_state_dict()) == set(model.state_dict())


@pytest.mark.parametrize(
    "config",
    [
        "differential-attention",
        "parallel-things-blocks",
        "parallel-scaling-rmsnorm",
        "differential-parallel-scaling",
    ],
)
def test_new_blocks_pass_rates_along_the_residual_stream(config, images):
    """Inside every block of these kinds each MT neuron and EC module takes its input as a rate,
    and every block norm reads the residual stream as one."""
    name, kwargs = MODELS[config]
    snn = transpike.convert(tiny_vit(name, **kwargs), images[0])
    inside = [m for block in snn.network.blocks for m in block.modules()]
    neurons = [m for m in inside if isinstance(m, transpike.MTNeuron)]
    ecs = [m for m in inside if isinstance(m, transpike.ExpectationCompensation)]
    assert neurons and all(m.takes_rate for m in neurons) and all(m.takes_rate for m in ecs)


def test_gated_mlps_and_the_attention_pool_pass_rates(images):
    """Inside a GLU MLP and an attention pool every converted module hands the next its rate."""
    calibration, _ = images
    for name, _ in (MODELS["aimv2-swiglu-rmsnorm"], MODELS["dinov2-swiglu-packed"]):
        mlp = transpike.convert(tiny_vit(name), calibration).network.blocks[0].mlp
        assert (mlp.act.takes_rate, mlp.act.emits_rate, mlp.gating.emits_rate) == (True, True, True)
        assert mlp.gating.neuron_a.takes_rate and mlp.gating.neuron_b.takes_rate and mlp.fc2.neuron.takes_rate
    pool = transpike.convert(tiny_vit(MODELS["siglip-attention-pool"][0]), calibration).network.attn_pool
    assert pool.qk.emits_rate and pool.softmax.takes_rate and pool.softmax.emits_rate and pool.av.emits_rate
    assert pool.qk.neuron_a.takes_rate and pool.proj.neuron.takes_rate and pool.mlp.fc1.neuron.takes_rate


def test_convolution_fed_by_spikes_gets_neurons():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(64, 3)
    ).eval()
    x = torch.randn(5, 1, 8, 8)
    snn = transpike.convert(model, torch.randn(32, 1, 8, 8), granularity="channel")
    assert [r.path for r in snn.report().by_role("mt+weight")] == ["0", "2", "5"]
    ref = ann_output(model, x)
    assert relative_error(snn.simulate(x, 64)[-1], ref) < 0.05


class Custom(nn.Module):
    def forward(self, x):
        return torch.relu(x) * 2


def test_unknown_module_is_named(images):
    model = tiny_vit()
    model.blocks[1].mlp.act = Custom()
    with pytest.raises(ConversionError) as error:
        transpike.convert(model, images[0])
    assert "blocks.1.mlp.act" in str(error.value)
    assert "Custom" in str(error.value)
    assert isinstance(error.value, ValueError)


def test_unknown_module_left_analog_when_not_strict(images):
    model = tiny_vit()
    model.blocks[1].mlp.act = Custom()
    calibration, x = images
    snn = transpike.convert(model, calibration, strict=False)
    analog = snn.report().analog
    assert [(r.path, r.module_type) for r in analog] == [("blocks.1.mlp.act", "Custom")]
    ref = ann_output(model, x)
    assert relative_error(snn.simulate(x, 64)[-1], ref) < 0.06


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(levels=0),
        dict(levels=2.5),
        dict(percentile=101.0),
        dict(percentile=0.0),
        dict(method="spikformer"),
        dict(granularity="head"),
        dict(rounding="up"),
        dict(neuron="lif"),
        dict(threshold="max"),
        dict(horizon=0),
    ],
)
def test_bad_options_are_named(kwargs, images):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        transpike.convert(tiny_vit(), images[0], **kwargs)


def test_calibration_forms(images):
    calibration, x = images
    model = tiny_vit()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(calibration, torch.zeros(32)), batch_size=8
    )
    by_tensor = transpike.convert(model, calibration).simulate(x, 3)
    by_loader = transpike.convert(model, loader).simulate(x, 3)
    by_list = transpike.convert(model, list(calibration.split(8))).simulate(x, 3)
    # histograms add up, so the thresholds do not depend on how the data was batched
    assert torch.equal(by_tensor, by_loader) and torch.equal(by_tensor, by_list)
    with pytest.raises(ValueError, match="empty"):
        transpike.convert(model, [])


@pytest.mark.parametrize(
    "options",
    [
        dict(levels=1),
        dict(rounding="nearest"),
        dict(granularity="channel"),
        dict(neuron="burst"),
        dict(threshold="mse"),
        dict(threshold="mse", rounding="nearest", granularity="channel"),
    ],
)
def test_ablation_options_converge(options, images):
    calibration, x = images
    model = tiny_vit()
    ref = ann_output(model, x)
    y = transpike.convert(model, calibration, **options).simulate(x, 128)
    assert_converges(y, ref)


def test_without_compensation_does_not_converge(images):
    calibration, x = images
    model = tiny_vit()
    ref = ann_output(model, x)
    with_ec = transpike.convert(model, calibration).simulate(x, 64)[-1]
    without = transpike.convert(model, calibration, compensation=False).simulate(x, 64)[-1]
    assert relative_error(without, ref) > 3 * relative_error(with_ec, ref)


def test_parallel_weights_give_same_outputs(images):
    calibration, x = images
    model = tiny_vit().double()
    snn = transpike.convert(model, calibration.double())
    fast = snn.simulate(x.double(), 8)
    parallel = snn.parallel()
    layer = parallel.network.blocks[0].mlp.fc1
    assert isinstance(layer, transpike.ParallelLayer)
    assert layer.layer.weight.shape == (96, 2 * 8 * 24)  # 2n copies of fc1's 24 inputs
    assert torch.allclose(parallel.simulate(x.double(), 8), fast, rtol=1e-9, atol=1e-9)


def test_parallel_weights_with_levels_per_octave(images):
    # 2n copies of the weights, one per level θ·2^(k/s): the same outputs as the fast path, to
    # rounding (levels that are not powers of two round differently in W·λ_p and in λ_p·θ then W)
    calibration, x = images
    snn = transpike.convert(
        tiny_vit().double(), calibration.double(), levels_per_octave=2, threshold="mse", rounding="nearest"
    )
    layer = snn.parallel().network.blocks[0].mlp.fc1
    assert layer.layer.weight.shape == (96, 2 * 15 * 24) and layer.neuron.per_octave == 2
    assert torch.allclose(
        snn.parallel().simulate(x.double(), 8), snn.simulate(x.double(), 8), rtol=1e-6, atol=1e-7
    )


def test_levels_per_octave_lower_the_error_at_few_steps(images):
    # one spike per step of a finer choice of sizes: at t = 1 each neuron's output is its input
    # rounded to the nearest level, 2^(1/4) apart instead of 2 (thresholds of the mse search)
    calibration, x = images
    model = tiny_vit()
    ref = ann_output(model, x)
    errors = {}
    for per_octave in (1, 4):
        snn = transpike.convert(
            model, calibration, threshold="mse", rounding="nearest", levels_per_octave=per_octave
        )
        assert snn.options["levels"] == 7 * per_octave + 1  # eight octaves by default
        outputs = snn.simulate(x, 4)
        errors[per_octave] = [relative_error(out, ref) for out in outputs]
    assert all(fine < 0.6 * coarse for fine, coarse in zip(errors[4], errors[1], strict=True))


def test_parallel_weights_by_hand():
    weight = torch.tensor([[1.0, -2.0]])
    copies = transpike.parallel_weights(weight, torch.tensor([0.5, 1.0]), torch.tensor([0.25, 2.0]), 2)
    # λ_p per input channel: [θ1, 2θ1, -θ2, -2θ2]
    expected = torch.tensor([[[0.5, -2.0]], [[1.0, -4.0]], [[-0.25, 4.0]], [[-0.5, 8.0]]])
    assert torch.equal(copies, expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["ecmt", "sit"])
def test_converted_on_device_matches_cpu(method, device, images):
    """Converted where the model lives (calibration there too), or converted on the CPU and moved
    there: the CPU's outputs, to rounding (on the CPU itself: the same bits)."""
    calibration, x = images
    model = tiny_vit()
    on_cpu = transpike.convert(model, calibration, method=method)
    reference = on_cpu.simulate(x, 6)
    on_device = transpike.convert(copy.deepcopy(model).to(device), calibration.to(device), method=method)
    for snn in (on_device, on_cpu.to(device)):
        y = snn.simulate(x, 6)
        assert y.device.type == device
        assert relative_error(y.cpu(), reference) <= (1e-4 if device != "cpu" else 0.0)


# one of each kind of neuron step: MT (per tensor), burst (per channel), and the spiking softmax
STEP_VARIANTS = [{}, dict(neuron="burst", granularity="channel", levels=4), dict(method="sit")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", STEP_VARIANTS)
def test_fused_network_equals_unfused(options, device, images):
    # rounding="nearest" is covered neuron by neuron in test_neurons.py
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration, **options).to(device)
    reference = snn.simulate(x, 5)
    assert torch.equal(snn.fuse().simulate(x, 5), reference)
    assert torch.equal(snn.simulate(x[:2], 5), snn.fuse(False).simulate(x[:2], 5))  # another batch size


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", STEP_VARIANTS)
def test_graphed_steps_equal_eager_steps(options, device, images):
    calibration, x = images
    snn = transpike.convert(tiny_vit(), calibration, **options).to(device)
    if device == "cpu":
        with pytest.raises(ValueError, match="CUDA device; it is on cpu"):
            snn.graph()
        return
    eager = snn.simulate(x, 7)
    snn.reset()
    eager_steps = [snn.step(x[:2]) for _ in range(3)]
    snn.graph()
    assert torch.equal(snn.simulate(x, 5), eager[:5])  # graphs 1-5 captured
    assert torch.equal(snn.simulate(x, 3), eager[:3])  # replayed
    assert torch.equal(snn.simulate(x, 7), eager)  # 1-5 replayed, 6-7 captured
    snn.reset()  # another shape has graphs of its own; step() returns its own copy
    steps = [snn.step(x[:2]) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(steps, eager_steps, strict=True))
    assert torch.equal(snn.fuse().simulate(x, 7), eager)  # recaptured with fused neurons
    with SpikeMonitor(snn), pytest.raises(transpike.GraphError, match="forward hooks"):
        snn.simulate(x, 2)
    assert torch.equal(snn.graph(False).fuse(False).simulate(x, 7), eager)


def test_a_module_shared_by_two_paths_gets_a_copy_for_each():
    """Converted, a module keeps state per call: one held at two paths (a GELU and a Linear used
    twice here) gets its own copy at each, with the ANN's values under the ANN's keys."""
    torch.manual_seed(0)
    act, fc = nn.GELU(), nn.Linear(8, 8)
    model = nn.Sequential(nn.Linear(4, 8), act, fc, act, fc, nn.Linear(8, 3)).eval()
    x = torch.randn(16, 4)
    snn = transpike.convert(model, torch.randn(64, 4), neuron="burst", threshold="mse")
    network = snn.network
    assert network[1] is not network[3] and network[2] is not network[4]
    assert set(snn.ann_state_dict()) == set(model.state_dict())
    assert relative_error(snn.simulate(x, 32)[-1], ann_output(model, x)) < 0.01
