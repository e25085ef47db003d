"""A rate link over a whole module (see :mod:`transpike.rates`), for modules whose containers are
linear from their input to their output layer: EdgeNeXt and Next-ViT up to the classifier, a
hybrid ViT's CNN stem up to the patch projection.

Between converted modules such a module computes only sums of their outputs, affine maps with
constant terms (BatchNorm, biases, LayerScale, pools) and constants (position encodings, what the
direct-input layer computes from the image, the same at every step). So every tensor that any
converted module inside reads is a linear function of what converted modules inside emit, and all
of them can pass rates at once: one link whose producers are every module that can emit a rate and
whose readers are every module that can read one. The output layer reads rates but emits what its
own readers outside take (increments for a network's output, which the simulation averages).
"""

from __future__ import annotations

from torch import nn

from ..compensation import ExpectationCompensation, SpikingProduct
from ..neurons import MTNeuron
from ..synapses import SpikingLayer
from . import Link


def link_all(module: nn.Module, *outputs: str) -> list[Link]:
    """The one link inside ``module`` whose output layers are at the paths ``outputs`` (one, or a
    distilled model's two heads)."""
    producers, readers, inside = [], [], None
    for path, child in module.named_modules():
        if inside is not None and path.startswith(inside):
            continue  # a spiking layer's neuron, an EC module's function or analog insides
        if isinstance(child, SpikingProduct):  # emits; its operand neurons read, below
            producers.append(path)
        elif isinstance(child, (SpikingLayer, ExpectationCompensation)):
            producers += [path] if path not in outputs else []
            readers.append(path)
            inside = f"{path}."
        elif isinstance(child, MTNeuron):
            readers.append(path)
    return [(tuple(producers), tuple(readers))]


def whole_network(network: nn.Module, classifier: str = "head.fc") -> list[Link]:
    """The one link of a network whose output layer is its classifier head's ``fc`` (timm's heads;
    else the Linear at the path ``classifier``), or the head itself when ``blocks=k`` leaves it
    analog; none for a headless model, whose output is a sum of producers."""
    output = "head" if isinstance(network.head, ExpectationCompensation) else classifier
    return [] if isinstance(network.get_submodule(output), nn.Identity) else link_all(network, output)


def to_head(network: nn.Module) -> list[Link]:
    """The one link of a network whose output layer is its ``head`` Linear (CaiT, XCiT,
    torchvision's Swin); none for a headless model, whose output is a sum of producers."""
    return [] if isinstance(network.head, nn.Identity) else link_all(network, "head")
