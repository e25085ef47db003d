"""Rate hand-over (transpike.rates): linked modules compute what unlinked ones do, with less state."""

import copy

import pytest
import torch
from conftest import tiny_vit
from test_convert import MODELS
from torch import nn

import transpike
from transpike import ExpectationCompensation, MTNeuron, SpikingProduct
from transpike.rates import link_rates
from transpike.rules import Role, register
from transpike.synapses import SpikingLayer


class Chain(nn.Module):
    """EC(LayerNorm) -> neuron + Linear -> EC(GELU) -> neuron + Linear -> Q·Kᵀ-like product -> EC(softmax)
    -> neuron of attn·V: every kind of producer and reader."""

    def __init__(self, compensated: bool = True) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(4)

        def neuron() -> MTNeuron:
            return MTNeuron(*torch.rand(2, generator=gen, dtype=torch.float64) * 0.2 + 0.05, 4)

        def linear(n_in: int, n_out: int) -> nn.Linear:
            layer = nn.Linear(n_in, n_out).double()
            layer.weight.data = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64) / n_in**0.5
            layer.bias.data = torch.randn(n_out, generator=gen, dtype=torch.float64) * 0.1
            return layer

        self.norm = ExpectationCompensation(nn.LayerNorm(6).double(), compensated)
        self.fc1 = SpikingLayer(neuron(), linear(6, 8))
        self.act = ExpectationCompensation(nn.GELU(), compensated)
        self.fc2 = SpikingLayer(neuron(), linear(8, 8))
        self.qk = SpikingProduct(neuron(), neuron(), scale=0.5, compensated=compensated)
        self.softmax = ExpectationCompensation(nn.Softmax(-1), compensated)
        self.av = SpikingProduct(neuron(), neuron(), compensated=compensated)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc2(self.act(self.fc1(self.norm(x))))
        return self.av(self.softmax(self.qk(h, h.transpose(-2, -1))), x)


register(
    Chain,
    Role.CONTAINER,
    links=lambda m: [
        ("norm", ("fc1",)),
        ("fc1", ("act",)),
        ("act", ("fc2",)),
        ("fc2", ("qk.neuron_a", "qk.neuron_b")),
        ("qk", ("softmax",)),
        ("softmax", ("av.neuron_a",)),
    ],
)


def inputs(steps: int = 10) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    return torch.randn(steps, 2, 5, 6, generator=gen, dtype=torch.float64)


def test_every_kind_of_link_gives_the_unlinked_outputs_with_less_state():
    plain, linked = Chain(), Chain()
    link_rates(linked)
    assert linked.norm.emits_rate and linked.fc1.neuron.takes_rate and linked.fc1.emits_rate
    assert linked.act.takes_rate and linked.act.emits_rate and linked.fc2.neuron.takes_rate
    assert linked.qk.neuron_a.takes_rate and linked.qk.emits_rate and linked.softmax.emits_rate
    assert linked.av.neuron_a.takes_rate and not linked.av.neuron_b.takes_rate and not linked.av.emits_rate
    spikes = {}
    for name, chain in (("plain", plain), ("linked", linked)):
        chain.fc2.neuron.register_forward_hook(
            lambda m, i, x, name=name: spikes.setdefault(name, []).append(x.clone())
        )
    for x in inputs():
        assert torch.allclose(linked(x), plain(x), rtol=1e-12, atol=1e-12)
    # the same spikes, and a neuron driven by rates keeps their sum
    assert all(torch.equal(a, b) for a, b in zip(spikes["plain"], spikes["linked"], strict=True))
    assert torch.allclose(linked.fc2.neuron.total, sum(spikes["linked"]))
    gone = [linked.norm.mean, linked.fc1.neuron.v, linked.act.rate, linked.act.mean, linked.fc2.neuron.v]
    gone += [
        linked.qk.neuron_a.v,
        linked.qk.mean,
        linked.softmax.rate,
        linked.softmax.mean,
        linked.av.neuron_a.v,
    ]
    assert all(state is None for state in gone)
    kept = [linked.norm.rate, linked.av.neuron_b.v, linked.av.mean]
    assert all(isinstance(state, torch.Tensor) for state in kept)


class Branches(nn.Module):
    """EC(LayerNorm) of the sum of a spiking layer and an EC(GELU): a residual stream in small."""

    def __init__(self, compensated: bool) -> None:
        super().__init__()
        self.layer = Chain().fc1
        self.act = ExpectationCompensation(nn.GELU(), compensated)
        self.norm = ExpectationCompensation(nn.LayerNorm(8).double())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layer(x) + self.act(x.repeat(1, 1, 2)[..., :8]))


register(Branches, Role.CONTAINER, links=lambda m: [(("layer", "act"), ("norm",))])


@pytest.mark.parametrize("compensated", [True, False])
def test_summed_producers_link_all_or_none(compensated):
    # a sum of a rate and an increment would be neither: one producer that cannot emit rates
    # (an EC applied to each step's input) keeps the other and the reader on increments
    plain, linked = Branches(compensated), Branches(compensated)
    link_rates(linked)
    flags = [linked.layer.emits_rate, linked.act.emits_rate, linked.norm.takes_rate]
    assert flags == [compensated] * 3
    for x in inputs():
        assert torch.allclose(linked(x), plain(x), rtol=1e-12, atol=1e-12)


def test_no_links_without_compensation_but_between_layer_and_neurons():
    chain = Chain(compensated=False)
    link_rates(chain)
    # an EC module applied to each step's input neither gives nor takes a rate; a spiking layer
    # still hands neurons its rate (what they integrate is the same)
    assert not chain.norm.emits_rate and not chain.fc1.neuron.takes_rate and not chain.fc1.emits_rate
    assert not chain.qk.emits_rate and not chain.softmax.takes_rate and not chain.av.neuron_a.takes_rate
    assert chain.fc2.emits_rate and chain.qk.neuron_a.takes_rate and chain.qk.neuron_b.takes_rate


def test_unlinking_restores_increments():
    chain = Chain()
    link_rates(chain)
    link_rates(chain, enabled=False)
    flags = [m.takes_rate for m in chain.modules() if isinstance(m, (MTNeuron, ExpectationCompensation))]
    flags += [
        m.emits_rate
        for m in chain.modules()
        if isinstance(m, (SpikingLayer, SpikingProduct, ExpectationCompensation))
    ]
    assert not any(flags)
    assert chain.qk.neuron_a.keeps_total and not chain.fc1.neuron.keeps_total  # product operands keep theirs


def test_hooks_on_a_layer_that_hands_on_rates_see_its_rate():
    # such a layer's rate is one GEMM on the spike sum, without calling the layer; a hook a user
    # put on the layer must still run, and see the rate it produces
    chain, plain = Chain(), Chain()
    link_rates(chain)
    link_rates(plain)
    seen = []
    chain.fc1.layer.register_forward_pre_hook(lambda module, args: seen.append(("in", args[0].clone())))
    chain.fc1.layer.register_forward_hook(lambda module, args, out: seen.append(("out", out.clone())))
    layer = chain.fc1.layer
    for t, x in enumerate(inputs(4), start=1):
        assert torch.allclose(chain(x), plain(x), rtol=1e-12, atol=1e-12)
        assert [kind for kind, _ in seen] == ["in", "out"] * t
        rate = chain.fc1.neuron.total / t
        assert torch.equal(seen[-2][1], rate)
        assert torch.equal(seen[-1][1], nn.functional.linear(rate, layer.weight, layer.bias))


@pytest.mark.parametrize("config", sorted(MODELS))
def test_linked_network_gives_the_unlinked_outputs(config, images):
    """In every ViT configuration: the links the rules name carry each output to all its readers
    (a missing reader would read rates as increments, a wrong one change the outputs)."""
    name, kwargs = MODELS[config]
    calibration, x = images
    linked = transpike.convert(tiny_vit(name, **kwargs).double(), calibration.double())
    plain = copy.deepcopy(linked)
    link_rates(plain.network, enabled=False)
    y = linked.simulate(x.double(), 8)
    assert torch.allclose(y, plain.simulate(x.double(), 8), rtol=1e-9, atol=1e-9)
    assert linked.state_bytes() < plain.state_bytes()


def test_every_block_passes_rates(images):
    calibration, _ = images
    for compensation in (True, False):
        snn = transpike.convert(tiny_vit(), calibration, compensation=compensation)
        for block in snn.network.blocks:
            attn, mlp = block.attn, block.mlp
            operands = [attn.qk.neuron_a, attn.qk.neuron_b, attn.av.neuron_b]  # q, k, v from qkv
            readers = [attn.qkv.neuron, attn.softmax, attn.av.neuron_a, attn.proj.neuron]
            readers += [mlp.fc1.neuron, mlp.act, mlp.fc2.neuron, block.norm1, block.norm2]
            producers = [block.norm1, attn.qk, attn.softmax, attn.av, block.norm2, mlp.fc1, mlp.act]
            producers += [attn.proj, mlp.fc2]  # the residual stream
            assert all(neuron.takes_rate for neuron in operands) and attn.qkv.emits_rate
            # without EC only qkv hands on rates: EC modules applied to each step's input and
            # products of each step's spikes neither give nor take them
            assert [m.takes_rate for m in readers] == [compensation] * 9
            assert [m.emits_rate for m in producers] == [compensation] * 9
        # the final norm hands the head its rate (through the class token's selection)
        norm, head = snn.network.norm, snn.network.head
        assert norm.takes_rate == norm.emits_rate == head.neuron.takes_rate == compensation


@pytest.mark.parametrize("blocks", [0, 1])
def test_residual_stream_passes_rates_to_blocks_left_analog(blocks, images):
    calibration, x = images
    linked = transpike.convert(tiny_vit().double(), calibration.double(), blocks=blocks)
    plain = copy.deepcopy(linked)
    link_rates(plain.network, enabled=False)
    network = linked.network
    first_analog = network.blocks[blocks]
    assert first_analog.analog and first_analog.takes_rate == (blocks > 0)  # blocks=0: no producer
    assert not any(block.takes_rate for block in network.blocks[blocks + 1 :]) and not network.norm.takes_rate
    assert torch.allclose(linked.simulate(x.double(), 6), plain.simulate(x.double(), 6), rtol=1e-9, atol=1e-9)
