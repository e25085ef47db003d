"""Rate hand-over: converted modules that pass each other rates instead of increments.

Every converted module can emit increments O(t), whose sum over steps is t times the value it
stands for (ECMT's EC rules), and every reader can rebuild that value's rate as a running mean.
Along a chain of modules where each output has only readers that can take a rate, the rate itself
can be handed on: a producer emits the rate it has at hand (an EC module F(S(t)/t), a product EC
Ā(t)·B̄(t), a layer W·X(t)/t + b from its neuron's spike sum X), and a reader takes it (an EC module
applies F to it directly; an MT neuron integrates t·r(t) - X(t-1), see
:func:`transpike.neurons.charge_fire_reset`). Exact up to rounding; what goes is, per link, the
producer's compensation pass and its previous value, the reader's running mean, and a neuron's
membrane. In a pre-norm ViT every module then passes rates, the residual stream included (every
block adds rates to it, every norm reads it as a rate), and the simulation state is less than
half as large (BENCHMARKS.md §3).

Which outputs go where is a property of a container's forward, so each container rule names its
links (:func:`transpike.rules.register`, ``links``): (producer, readers) paths inside the container,
such that the producer's output reaches exactly those readers, through operations that are linear
and the same at every step (reshapes, transposes, sums with terms that are the same at every step,
dropout in evaluation). Producers whose outputs are summed (the residual stream) link all together
or not at all. A link is made only if every producer can emit rates and every reader can take
them: compensated EC modules and product ECs, any spiking layer, any MT neuron, and a module left
analog by ``blocks=k`` as a reader; an EC applied to each step's input (``compensation=False``)
breaks the chain there.
"""

from __future__ import annotations

from torch import nn

from .compensation import ExpectationCompensation, SpikingProduct
from .neurons import MTNeuron
from .rules import rule_for
from .synapses import SpikingLayer


def _emits(module: nn.Module) -> bool:
    if isinstance(module, (ExpectationCompensation, SpikingProduct)):
        return module.compensated
    return isinstance(module, SpikingLayer)


def _takes(module: nn.Module) -> bool:
    if isinstance(module, ExpectationCompensation):
        return module.compensated
    return isinstance(module, (MTNeuron, SpikingLayer))


def _set_takes(module: nn.Module) -> None:
    if isinstance(module, SpikingLayer):
        module = module.neuron
    module.takes_rate = True


def _set_emits(module: nn.Module, enabled: bool) -> None:
    module.emits_rate = enabled
    if isinstance(module, SpikingLayer):  # it reads its neuron's spike sum instead of its spikes
        module.neuron.keeps_total = enabled
        module.neuron.spikes_read = not enabled


def link_rates(network: nn.Module, enabled: bool = True) -> None:
    """Make every link the containers' rules name in ``network`` where both ends allow it; with
    ``enabled=False``, undo all of them (every module passes increments again).

    Changes what the modules keep as state: call it before a simulation, not during one.
    """
    if not enabled:
        for module in network.modules():
            if isinstance(module, (ExpectationCompensation, MTNeuron)):
                module.takes_rate = False
            if isinstance(module, (ExpectationCompensation, SpikingProduct, SpikingLayer)):
                _set_emits(module, False)
        return
    for container in network.modules():
        rule = rule_for(container)
        if rule is None or rule.links is None:
            continue
        for producer_paths, reader_paths in rule.links(container):
            if isinstance(producer_paths, str):
                producer_paths = (producer_paths,)
            producers = [container.get_submodule(path) for path in producer_paths]
            readers = [container.get_submodule(path) for path in reader_paths]
            # summed producers: a sum of rates and increments would be neither
            if all(map(_emits, producers)) and all(map(_takes, readers)):
                for producer in producers:
                    _set_emits(producer, True)
                for reader in readers:
                    _set_takes(reader)
