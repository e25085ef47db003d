"""timm's VOLO: outlook attention (weights from a Linear of the pooled map over each pixel's
neighborhood, unfold and fold), ViT blocks on a channels-last map, class-attention blocks, and the
auxiliary head's maximum over the tokens; the twins, conversion, rate links, ``blocks=k`` and
save/load."""

import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_prepared_matches_in_float64,
    assert_rates_up_to,
    random_images,
    spread,
)
from timm.models.volo import VOLO

from transpike.rules.timm_volo import AuxPooledVolo, ExplicitOutlookAttention

#: at 32 px: an outlooker on the 4 × 4 map (3 × 3 neighborhoods, weights from the map pooled to
#: 2 × 2), a downsampling to 2 × 2, a ViT block there, a class-attention block
TINY = dict(layers=(1, 1), img_size=32, embed_dims=(16, 24), num_heads=(1, 2), stem_hidden_dim=8)
TINY.update(downsamples=(True, False), outlook_attention=(True, False), post_layers=("ca",), num_classes=5)
VARIANTS = {"auxiliary head": {}, "no auxiliary head": dict(use_aux_head=False)}


def build(variant: str = "auxiliary head") -> torch.nn.Module:
    torch.manual_seed(0)
    model = VOLO(**TINY, **VARIANTS[variant]).eval()
    drawn = ("attn.proj.weight", "mlp.fc2.weight", "head.weight", "aux_head.weight")
    return spread(model, drawn, scaled=("qkv.weight", "attn.attn.weight", ".q.weight", ".kv.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(32, (16, 4))


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_twins_compute_what_timm_does(variant, inputs):
    prepared = assert_prepared_matches_in_float64(build(variant), inputs[1])
    assert isinstance(prepared, AuxPooledVolo) == (variant == "auxiliary head")
    assert sum(isinstance(m, ExplicitOutlookAttention) for m in prepared.modules()) == 1


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_volo_converts(variant, options, inputs):
    """The stem's first convolution reads the image; one product in the outlooker, two in the ViT
    block and in the class attention; the auxiliary head's maximum is an EC module."""
    snn = assert_converts(build(variant), *inputs, options, direct="patch_embed.conv.0", products=1 + 2 + 2)
    ec = {r.path for r in snn.report().by_role("ec")}
    assert ("aux_pool" in ec) == (variant == "auxiliary head")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_module_passes_rates_like_increments(variant, inputs):
    outputs = ("head", "aux_pool") if variant == "auxiliary head" else ("head",)
    assert_rates_up_to(build(variant), *inputs, outputs=outputs)


def test_blocks_and_round_trip(tmp_path, inputs):
    after = ["aux_head", "norm", "head"]  # in module order; the maximum, a twin's module, is EC anyway
    analog = {1: ["network.2.0", "post_network.0", *after], 2: ["post_network.0", *after]}
    assert_blocks_and_round_trip(build, inputs, analog, tmp_path / "net.safetensors")
