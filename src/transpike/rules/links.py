"""A rate link over a whole network (see :mod:`transpike.rates`), for families whose containers
are linear from the input to the output layer: EdgeNeXt, Next-ViT.

Between converted modules such a network computes only sums of their outputs, affine maps with
constant terms (BatchNorm, biases, LayerScale, pools) and constants (position encodings, what the
direct-input layer computes from the image, the same at every step). So every tensor that any
converted module reads is a linear function of what converted modules emit, and all of them can
pass rates at once: one link whose producers are every module that can emit a rate and whose
readers are every module that can read one. The output layer reads rates but keeps emitting
increments, which the simulation averages into the network's output.
"""

from __future__ import annotations

from torch import nn

from ..compensation import ExpectationCompensation, SpikingProduct
from ..neurons import MTNeuron
from ..synapses import SpikingLayer
from . import Link


def whole_network(network: nn.Module) -> list[Link]:
    """The one link of a network whose output layer is its classifier head's ``fc`` (timm's heads),
    or the head itself when ``blocks=k`` leaves it analog; none for a headless model, whose output
    is a sum of producers."""
    output = "head" if isinstance(network.head, ExpectationCompensation) else "head.fc"
    if isinstance(network.get_submodule(output), nn.Identity):
        return []
    producers, readers, inside = [], [], None
    for path, module in network.named_modules():
        if inside is not None and path.startswith(inside):
            continue  # a spiking layer's neuron, an EC module's function or analog insides
        if isinstance(module, SpikingProduct):  # emits; its operand neurons read, below
            producers.append(path)
        elif isinstance(module, (SpikingLayer, ExpectationCompensation)):
            producers += [path] if path != output else []
            readers.append(path)
            inside = f"{path}."
        elif isinstance(module, MTNeuron):
            readers.append(path)
    return [(tuple(producers), tuple(readers))]
