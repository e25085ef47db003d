"""torch's own Transformer layers, ``nn.TransformerEncoderLayer`` and ``nn.TransformerEncoder``, in
a ViT written with them, and ``nn.TransformerDecoderLayer`` and ``nn.TransformerDecoder`` in a head
of learned queries: the explicit twins, conversion, rate links, save and load, ``blocks=k``."""

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    CONFIGURATIONS,
    ann_output,
    assert_converts,
    assert_links_keep_outputs,
    assert_round_trip,
    emitters,
    random_images,
    relative_error,
)
from torch import nn

import transpike
from transpike import ConversionError, prepare
from transpike.convert import ConversionOptions
from transpike.rules import Role, register
from transpike.rules.links import link_all
from transpike.rules.torch_transformer import (
    ExplicitCrossAttention,
    ExplicitDecoder,
    ExplicitDecoderLayer,
    ExplicitEncoder,
    ExplicitEncoderLayer,
    ExplicitMultiheadAttention,
)
from transpike.synapses import SpikingLayer


class TorchViT(nn.Module):
    """A ViT as a user writes it with torch's layers: 4 px patches of a 16 px image, a class
    token, position embeddings, ``nn.TransformerEncoder``, a final norm and a linear head."""

    def __init__(self, norm_first: bool = True, activation="gelu", batch_first: bool = True) -> None:
        super().__init__()
        width = 32
        self.patch = nn.Conv2d(3, width, 4, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, 17, width) * 0.5)
        layer = nn.TransformerEncoderLayer(
            width, 4, 64, dropout=0.1, activation=activation, batch_first=batch_first, norm_first=norm_first
        )
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 5)
        self.batch_first = batch_first
        with torch.no_grad():  # scores spread over the keys, so that the attention matters
            for layer in self.encoder.layers:
                layer.self_attn.in_proj_weight.mul_(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.pos
        if not self.batch_first:
            tokens = tokens.transpose(0, 1)
        tokens = self.encoder(tokens)
        if not self.batch_first:
            tokens = tokens.transpose(0, 1)
        return self.head(self.norm(tokens[:, 0]))


class LinkedTorchViT(TorchViT):
    """The same model, registered with one rate link over all of it: between its converted
    modules its forward only adds constants (class token, position embeddings), sums, selects and
    transposes, so every converted module may pass rates (:func:`transpike.rules.links.link_all`)."""


# what a user registers: the patch convolution reads the image
register(TorchViT, Role.INPUT)
register(LinkedTorchViT, Role.INPUT, links=lambda vit: link_all(vit, "head"))


def build(linked: bool = False, **kwargs) -> TorchViT:
    torch.manual_seed(0)
    return (LinkedTorchViT if linked else TorchViT)(**kwargs).eval()


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(16)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu", nn.SiLU()])
@pytest.mark.parametrize("batch_first", [True, False])
def test_the_twins_compute_what_torch_does(norm_first, activation, batch_first, inputs):
    model = build(norm_first=norm_first, activation=activation, batch_first=batch_first)
    prepared = prepare(model, ConversionOptions())
    assert isinstance(prepared.encoder, ExplicitEncoder)
    assert all(isinstance(layer, ExplicitEncoderLayer) for layer in prepared.encoder.layers)
    x = inputs[1]
    with torch.no_grad():
        for fast in (True, False):  # torch's fused encoder layer, or its step-by-step forward
            torch.backends.mha.set_fastpath_enabled(fast)
            try:
                assert torch.allclose(prepared(x), model(x), atol=1e-5)
            finally:
                torch.backends.mha.set_fastpath_enabled(True)


@pytest.mark.parametrize("options", CONFIGURATIONS)
@pytest.mark.parametrize("norm_first", [True, False])
def test_a_vit_of_torch_layers_converges(options, norm_first, inputs):
    snn = assert_converts(build(norm_first=norm_first), *inputs, options, direct="patch", products=2 * 2)
    ec = {r.path for r in snn.report().by_role("ec")}
    assert {"encoder.layers.0.norm1", "encoder.layers.1.activation", "norm"} <= ec


def test_an_activation_function_is_refused_by_path(inputs):
    model = build(activation=F.silu)
    with pytest.raises(ConversionError, match="activation is the function silu") as error:
        transpike.convert(model, inputs[0])
    assert "encoder.layers.0" in str(error.value) and "TransformerEncoderLayer" in str(error.value)


def test_masks_are_refused():
    layer = nn.TransformerEncoderLayer(8, 2, batch_first=True)
    encoder = ExplicitEncoder(nn.TransformerEncoder(layer, 1, enable_nested_tensor=False))
    x = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="masks are not supported"):
        encoder(x, mask=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="masks are not supported"):
        encoder(x, src_key_padding_mask=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="masks are not supported"):
        ExplicitEncoderLayer(layer)(x, is_causal=True)


@pytest.mark.parametrize("norm_first", [True, False])
def test_links_inside_the_layers_keep_the_output(norm_first, inputs):
    """Inside each layer the MLP (and, pre-norm, the norms into the attention and the MLP) pass
    rates; linked = unlinked."""
    calibration, x = inputs
    linked = transpike.convert(build(norm_first=norm_first).double(), calibration.double())
    layer = linked.network.encoder.layers[1]
    assert layer.linear1.emits_rate and layer.activation.emits_rate
    assert layer.norm1.emits_rate == norm_first and layer.self_attn.qkv.emits_rate
    assert any(not m.emits_rate for m in emitters(linked.network))  # the residual stream is not linked here
    assert_links_keep_outputs(linked, x.double())


def test_blocks_count_the_encoder_layers(inputs):
    calibration, x = inputs
    model = build()
    ref = ann_output(model, x)
    for k in range(3):
        snn = transpike.convert(model, calibration, blocks=k, neuron="burst", threshold="mse")
        analog = [row.path for row in snn.report().analog]
        assert analog == [*[f"encoder.layers.{i}" for i in range(k, 2)], *(["norm", "head"] if k < 2 else [])]
        assert relative_error(snn.simulate(x, 16)[-1], ref) < (1e-5 if k == 0 else 0.01)


@pytest.mark.parametrize("norm_first", [True, False])
def test_a_link_over_the_whole_model_keeps_the_output(norm_first, inputs):
    """With :func:`~transpike.rules.links.link_all` every converted module but the head emits
    rates, the residual stream included, pre-norm or post-norm; linked = unlinked."""
    calibration, x = inputs
    linked = transpike.convert(build(linked=True, norm_first=norm_first).double(), calibration.double())
    head = linked.network.head
    assert all(m.emits_rate for m in emitters(linked.network) if m is not head) and not head.emits_rate
    assert_links_keep_outputs(linked, x.double())


class QueryViT(nn.Module):
    """A head of learned queries over a ViT encoder's tokens, as ML-Decoder and Query2Label build
    it with torch's layers: ``nn.TransformerDecoder`` (self-attention over the queries,
    cross-attention to the image's tokens), then one logit per query."""

    def __init__(self, norm_first: bool = True, batch_first: bool = True) -> None:
        super().__init__()
        width, queries = 32, 5
        self.patch = nn.Conv2d(3, width, 4, 4)
        self.pos = nn.Parameter(torch.randn(1, 16, width) * 0.5)
        encoder = nn.TransformerEncoderLayer(
            width, 4, 64, dropout=0.1, batch_first=batch_first, norm_first=norm_first
        )
        self.encoder = nn.TransformerEncoder(encoder, 1, enable_nested_tensor=False)
        self.queries = nn.Parameter(torch.randn(queries, width) * 0.5)
        decoder = nn.TransformerDecoderLayer(
            width, 4, 64, dropout=0.1, batch_first=batch_first, norm_first=norm_first
        )
        self.decoder = nn.TransformerDecoder(decoder, 2, norm=nn.LayerNorm(width))
        self.head = nn.Linear(width, 1)
        self.batch_first = batch_first
        with torch.no_grad():  # scores spread over the keys, so that the attention matters
            for name, parameter in self.named_parameters():
                if name.endswith("in_proj_weight"):
                    parameter.mul_(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        queries = self.queries.expand(len(x), -1, -1)
        if not self.batch_first:
            tokens, queries = tokens.transpose(0, 1), queries.transpose(0, 1)
        out = self.decoder(queries, self.encoder(tokens))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return self.head(out).squeeze(-1)  # [B, queries]


register(QueryViT, Role.INPUT)


def query_vit(**kwargs) -> QueryViT:
    torch.manual_seed(1)
    return QueryViT(**kwargs).eval()


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_the_decoder_twins_compute_what_torch_does(norm_first, batch_first, inputs):
    model = query_vit(norm_first=norm_first, batch_first=batch_first)
    prepared = prepare(model, ConversionOptions())
    assert isinstance(prepared.decoder, ExplicitDecoder)
    for layer in prepared.decoder.layers:
        assert isinstance(layer, ExplicitDecoderLayer) and isinstance(
            layer.multihead_attn, ExplicitCrossAttention
        )
        assert isinstance(layer.self_attn, ExplicitMultiheadAttention)
    x = inputs[1]
    with torch.no_grad():
        assert torch.allclose(prepared(x), model(x), atol=1e-5)
        # unbatched: [tokens, width] targets and memory
        original = model.decoder.layers[0]
        tgt, memory = torch.randn(5, 32), torch.randn(16, 32)
        assert torch.allclose(ExplicitDecoderLayer(original)(tgt, memory), original(tgt, memory), atol=1e-5)


@pytest.mark.parametrize("options", CONFIGURATIONS)
@pytest.mark.parametrize("norm_first", [True, False])
def test_a_head_of_learned_queries_converges(options, norm_first, inputs, tmp_path):
    # the encoder's self-attention, then per decoder layer a self- and a cross-attention: 2 products
    # each. Five attentions in a row leave the paper default at 0.14-0.28 after 32 steps (0.06-0.12
    # after 64), burst neurons at 0.003.
    model = query_vit(norm_first=norm_first)
    snn = assert_converts(model, *inputs, options, direct="patch", products=2 + 2 * 4, tolerance=0.3)
    ec = {r.path for r in snn.report().by_role("ec")}
    assert {"decoder.layers.1.norm3", "decoder.layers.0.multihead_attn.softmax", "decoder.norm"} <= ec
    cross = snn.network.decoder.layers[0].multihead_attn
    assert isinstance(cross.q_proj, SpikingLayer) and isinstance(cross.kv_proj, SpikingLayer)
    # the packed in_proj_weight comes back whole from its two parts
    assert_round_trip(snn, lambda: query_vit(norm_first=norm_first), inputs[1], tmp_path / "net.safetensors")


@pytest.mark.parametrize("norm_first", [True, False])
def test_links_inside_the_decoder_layers_keep_the_output(norm_first, inputs):
    calibration, x = inputs
    linked = transpike.convert(query_vit(norm_first=norm_first).double(), calibration.double())
    layer = linked.network.decoder.layers[1]
    assert layer.linear1.emits_rate and layer.multihead_attn.kv_proj.emits_rate
    assert layer.norm2.emits_rate == norm_first and layer.norm3.emits_rate == norm_first
    assert_links_keep_outputs(linked, x.double())


def test_blocks_0_leaves_the_decoder_analog_on_the_rates_of_both_its_inputs(inputs):
    """The decoder reads the queries (the same at every step) and the encoder's tokens: its EC
    module keeps the rate of each, so the decoder left analog computes the ANN's output."""
    calibration, x = inputs
    model = query_vit()
    ref = ann_output(model, x)
    snn = transpike.convert(model, calibration, blocks=0)
    assert [row.path for row in snn.report().analog] == ["encoder.layers.0", "decoder", "head"]
    assert relative_error(snn.simulate(x, 4)[-1], ref) < 1e-5
    converted = transpike.convert(model, calibration, blocks=1, neuron="burst", threshold="mse")
    assert not converted.report().analog and relative_error(converted.simulate(x, 16)[-1], ref) < 0.01


def test_what_the_cross_attention_cannot_take_is_refused(inputs):
    layer = nn.TransformerDecoderLayer(8, 2, batch_first=True)
    twin = ExplicitDecoderLayer(layer)
    tgt, memory = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    padding = torch.zeros(2, 3, dtype=torch.bool)
    for masks in (
        dict(memory_mask=torch.zeros(3, 5)),
        dict(tgt_key_padding_mask=padding),
        dict(tgt_is_causal=True),
    ):
        with pytest.raises(ValueError, match="masks are not supported"):
            twin(tgt, memory, **masks)
    prepared = prepare(query_vit(), ConversionOptions()).decoder  # the decoder hands its layers the masks
    with pytest.raises(ValueError, match="masks are not supported"):
        prepared(torch.randn(2, 5, 32), torch.randn(2, 16, 32), memory_mask=torch.zeros(5, 16))
    assert prepared(torch.randn(2, 5, 32), torch.randn(2, 16, 32), tgt_is_causal=None).shape == (2, 5, 32)
    with pytest.raises(ValueError, match="key and value the same tensor"):
        twin.multihead_attn(tgt, memory, memory.clone())
    with pytest.raises(ValueError, match=r"or as the cross-attention of an nn\.TransformerDecoderLayer"):
        ExplicitMultiheadAttention(layer.self_attn)(tgt, memory, memory)  # self-attention used across two
    model = query_vit()
    model.decoder.layers[1].multihead_attn = nn.MultiheadAttention(32, 4, kdim=16, vdim=16, batch_first=True)
    with pytest.raises(ConversionError, match="its multihead_attn: kdim=16 / vdim=16 differ") as error:
        transpike.convert(model, inputs[0])
    assert "decoder.layers.1" in str(error.value)
