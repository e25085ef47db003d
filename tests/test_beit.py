"""timm's BEiT: attention with a relative position bias (per block or shared) and separate q and v
biases, LayerScale, mean pooling with fc_norm; the twin, conversion, rate links and ``blocks=k``."""

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
from timm.models.beit import Attention

import transpike
from transpike import ConversionOptions, prepare
from transpike.io import rebuild_ann
from transpike.rules.timm_beit import ExplicitBeitAttention

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=5)
VARIANTS = {
    "own bias": dict(use_rel_pos_bias=True, use_abs_pos_emb=False),
    "shared bias": dict(use_shared_rel_pos_bias=True, init_values=0.5),
    "both, token pool": dict(use_rel_pos_bias=True, use_shared_rel_pos_bias=True, global_pool="token"),
}


def build(variant: str) -> torch.nn.Module:
    """A small random-init BEiT whose attention matters: q, k and v scaled up, the biases spread
    (timm starts the tables at zero) and the q and v biases not zero."""
    torch.manual_seed(0)
    model = timm.create_model("beit_base_patch16_224", **TINY, **VARIANTS[variant]).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "relative_position_bias_table" in name or name.endswith(("q_bias", "v_bias")):
                parameter.normal_(0, 1.0)
            if name.endswith("qkv.weight"):
                parameter.mul_(4)
            if name.endswith("head.weight"):
                parameter.normal_(0, 0.3)
    return model


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_twin_computes_what_timm_does(variant, inputs):
    model = build(variant)
    prepared = prepare(model, ConversionOptions())
    assert sum(isinstance(m, ExplicitBeitAttention) for m in prepared.modules()) == 2
    with torch.no_grad():
        for fused in (True, False):
            for module in model.modules():
                if isinstance(module, Attention):
                    module.fused_attn = fused
            assert torch.allclose(prepared(inputs[1]), model(inputs[1]), atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_beit_converges(variant, options, inputs):
    snn = assert_converts(build(variant), *inputs, options, direct="patch_embed.proj", products=2 * 2)
    shared = [r.path for r in snn.report().by_role("constant")]
    assert shared == (["rel_pos_bias"] if "shared" in variant or "both" in variant else [])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("blocks", [None, 1])
def test_every_module_passes_rates_like_increments(variant, blocks, inputs):
    """The residual stream, the norms into the attention and the MLP, and fc_norm into the head
    pass rates (BEiT's blocks are a ViT's); linked = unlinked."""
    calibration, x = inputs
    linked = transpike.convert(build(variant).double(), calibration.double(), blocks=blocks)
    network = linked.network
    first = network.blocks[0]
    assert first.attn.proj.emits_rate and first.mlp.fc2.emits_rate and first.norm1.emits_rate
    if blocks is None:
        head = network.head
        assert all(m.emits_rate for m in emitters(network) if m is not head) and not head.emits_rate
    else:
        assert network.blocks[1].takes_rate  # the analog rest reads the stream's rate
    assert_links_keep_outputs(linked, x.double())


def test_blocks_and_round_trip(tmp_path, inputs):
    calibration, x = inputs
    model = build("shared bias")
    ref = ann_output(model, x)
    after = ["fc_norm", "head"]  # after the blocks, in module order (norm is an Identity here)
    for k in range(3):
        snn = transpike.convert(model, calibration, blocks=k, neuron="burst", threshold="mse")
        analog = [row.path for row in snn.report().analog]
        assert analog == ([f"blocks.{i}" for i in range(k, 2)] + after if k < 2 else [])
        assert relative_error(snn.simulate(x, 16)[-1], ref) < (1e-5 if k == 0 else 0.01)
    spec = {"timm": "beit_base_patch16_224", "kwargs": {**TINY, **VARIANTS["shared bias"]}}
    snn = transpike.convert(model, calibration, method="sit", model_spec=spec)
    loaded = transpike.load(transpike.save(snn, tmp_path / "net.safetensors"))
    assert torch.equal(loaded.simulate(x, 4), snn.simulate(x, 4))
    with torch.no_grad():
        assert torch.equal(rebuild_ann(loaded)(x), model(x))
