"""timm's FastViT, in training form (MobileOne blocks of parallel branches: every branch of the
stem's first block reads the image) and in inference form (one re-parameterized convolution per
block): RepMixer and attention blocks, conditional position encodings, squeeze-and-excitation in
the final block; the twin, conversion, rate links, ``blocks=k`` and save/load."""

import pytest
import timm
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks,
    assert_converts,
    assert_links_keep_outputs,
    assert_rates_up_to,
    assert_round_trip,
    assert_twin_matches,
    random_images,
    spread,
)
from timm.models.fastvit import Attention
from timm.utils.model import reparameterize_model

import transpike
from transpike.rules.timm_fastvit import ExplicitPixelAttention

#: FastViT-SA12's layout with one block per stage at 64 px (16×16 to 2×2 maps), the last stage
#: an attention block
TINY = dict(layers=[1, 1, 1, 1], embed_dims=[64, 64, 64, 64], num_classes=5)
FORMS = {
    "training": {},
    "inference": dict(inference_mode=True),
}
DIRECT = {
    "training": ("stem.0.conv_kxk.0.conv", "stem.0.conv_scale.conv"),
    "inference": ("stem.0.reparam_conv",),
}


def build(form: str = "training") -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("fastvit_sa12", **TINY, **FORMS[form]).eval()
    return spread(model, ("token_mixer.proj.weight", "mlp.fc2.weight", "head.fc.weight"))


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


def test_the_twin_computes_what_timm_does_in_both_forms(inputs):
    """The attention twin in both forms; timm's re-parameterization of the training form gives the
    inference form, which converts with its one stem convolution direct."""
    model = build()
    assert_twin_matches(model, inputs[1], Attention, ExplicitPixelAttention, 1)
    reparameterized = reparameterize_model(build())
    snn = transpike.convert(reparameterized, inputs[0])
    assert [r.path for r in snn.report().by_role("direct-input")] == ["stem.0.reparam_conv"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_fastvit_converts(form, options, inputs):
    """Every convolution that reads the image is direct; the rest get MT neurons; the attention's
    two products and the final block's squeeze-and-excitation gating."""
    assert_converts(build(form), *inputs, options, direct=DIRECT[form], products=2 + 1)


@pytest.mark.parametrize("form", FORMS)
def test_every_module_passes_rates_like_increments(form, inputs):
    assert_rates_up_to(build(form), *inputs, outputs=("head.fc",))


def test_blocks_count_every_stages_blocks_and_round_trip(tmp_path, inputs):
    """blocks=k counts each stage's blocks (a later stage's patch embedding, before its blocks,
    converts with the stage or alone); saved and loaded by the model's spec, inference form
    included, the network keeps timm's keys."""
    calibration, x = inputs
    tail = ["final_conv", "head"]
    expected = {
        1: ["stages.1.blocks.0", "stages.2", "stages.3", *tail],
        3: ["stages.3.blocks.0", *tail],
        4: [],
    }
    assert_blocks(build(), calibration, x, expected)
    assert_links_keep_outputs(transpike.convert(build().double(), calibration.double(), blocks=2), x.double())
    for form in FORMS:
        spec = {"timm": "fastvit_sa12", "kwargs": {**TINY, **FORMS[form]}}
        snn = transpike.convert(build(form), calibration, method="sit", model_spec=spec)
        assert_round_trip(
            snn, lambda form=form: build(form), x, tmp_path / f"{form}.safetensors", by_spec=True
        )
