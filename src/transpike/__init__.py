"""transpike: ANN-to-SNN conversion of Vision Transformers, with accuracy and cost at every step.

import transpike
snn = transpike.convert(model, calibration, method="ecmt", levels=8, percentile=99.0)
y = snn.simulate(x, time_steps=8)   # [T, B, classes]; y[t-1] is the prediction after t steps
"""

from ._version import __version__
from .compensation import ExpectationCompensation, SpikingProduct, compensate
from .convert import ConversionOptions, calibrate, convert, prepare, to_spiking
from .energy import ARITHMETIC, EnergyReport, account
from .errors import ConversionError, FusionError, GraphError
from .io import load, save
from .model import ConversionReport, SpikingModel
from .neurons import MTNeuron, burst_fire, mt_fire, spike_planes
from .synapses import ParallelLayer, SpikingLayer, parallel_weights

__all__ = [
    "ARITHMETIC",
    "ConversionError",
    "ConversionOptions",
    "ConversionReport",
    "EnergyReport",
    "ExpectationCompensation",
    "FusionError",
    "GraphError",
    "MTNeuron",
    "ParallelLayer",
    "SpikingLayer",
    "SpikingModel",
    "SpikingProduct",
    "__version__",
    "account",
    "burst_fire",
    "calibrate",
    "compensate",
    "convert",
    "load",
    "mt_fire",
    "parallel_weights",
    "prepare",
    "save",
    "spike_planes",
    "to_spiking",
]
