"""transpike: ANN-to-SNN conversion of Vision Transformers, with accuracy and cost at every step.

import transpike
snn = transpike.convert(model, calibration, method="ecmt", levels=8, percentile=99.0)
y = snn.simulate(x, time_steps=8)   # [T, B, classes]; y[t-1] is the prediction after t steps
"""

from .compensation import ExpectationCompensation, SpikingProduct, compensate
from .convert import ConversionOptions, calibrate, convert, prepare, to_spiking
from .errors import ConversionError
from .model import ConversionReport, SpikingModel
from .neurons import MTNeuron, burst_fire, mt_fire, spike_planes
from .synapses import ParallelLayer, SpikingLayer, parallel_weights

__version__ = "0.1.0"

__all__ = [
    "ConversionError",
    "ConversionOptions",
    "ConversionReport",
    "ExpectationCompensation",
    "MTNeuron",
    "ParallelLayer",
    "SpikingLayer",
    "SpikingModel",
    "SpikingProduct",
    "__version__",
    "burst_fire",
    "calibrate",
    "compensate",
    "convert",
    "mt_fire",
    "parallel_weights",
    "prepare",
    "spike_planes",
    "to_spiking",
]
