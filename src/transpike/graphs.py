"""Simulation steps replayed as CUDA graphs (:meth:`transpike.SpikingModel.graph`).

A GPU step of a converted network launches hundreds of small kernels, and at small batches the
host launching them, not the GPU, bounds the step (BENCHMARKS.md §3b). A CUDA graph records the
kernels of one step once and replays them with one launch. Step t's kernels carry t as a constant
(the EC rules' weights t and 1/t), so each t has its own graph: graph t is captured the first time
step t runs for an input shape, then replayed. The graphs of one shape share one memory pool and
are replayed in the order they were captured, which is what makes sharing it safe: memory a step
frees is only reused by later steps. Graph 1 re-creates every state tensor (membranes start at
zero, running sums at the first input), so no reset kernels are needed between inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .errors import GraphError
from .neurons import scratch_buffer
from .state import Stateful


class StepGraphs:
    """The steps of ``network`` for inputs shaped like ``example``, as CUDA graphs.

    The graphs read the input from one fixed tensor and write each step's output to another, so
    :meth:`step` copies x in and returns a tensor that the next run's step t overwrites.
    The state tensors live in the graphs' pool; between captures this object holds them (as they
    were after the last captured step), whatever the modules' own attributes are meanwhile.
    """

    def __init__(self, network: nn.Module, example: Tensor) -> None:
        if example.device.type != "cuda":
            raise GraphError(f"CUDA graphs need the network on a CUDA device; it is on {example.device}")
        self.network = network
        self.modules = [m for m in network.modules() if isinstance(m, Stateful)]
        self.input = example.clone()
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: list[torch.cuda.CUDAGraph] = []
        self.outputs: list[Tensor] = []
        self.t = 0
        self._warm_up()
        self.state = [m.state() for m in self.modules]  # the state before step 1: all None
        # kernels that fire neurons write to this scratch memory: it must outlive the graphs
        self.scratch = scratch_buffer()

    def _warm_up(self) -> None:
        """Two eager steps (t = 1 and t > 1 take different paths) on a side stream before any
        capture, as CUDA graphs require: libraries initialize and compiled kernels get built."""
        stream = torch.cuda.Stream(self.input.device)
        stream.wait_stream(torch.cuda.current_stream(self.input.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.network(self.input)
        torch.cuda.current_stream(self.input.device).wait_stream(stream)
        for module in self.modules:
            module.reset()

    def reset(self) -> None:
        """The next step is step 1 of a new input."""
        self.t = 0

    def step(self, x: Tensor) -> Tensor:
        """Step t + 1 on x: replayed, or captured first if no run has reached it yet."""
        if self.t == 0:
            check_no_hooks(self.network)
        self.input.copy_(x)
        if self.t == len(self.graphs):
            self._capture()
        self.graphs[self.t].replay()
        self.t += 1
        return self.outputs[self.t - 1]

    def _capture(self) -> None:
        for module, state in zip(self.modules, self.state, strict=True):
            module.restore(state)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                output = self.network(self.input)
        except RuntimeError as error:
            raise GraphError(
                f"CUDA graphs: step {len(self.graphs) + 1} could not be captured "
                f"({str(error).splitlines()[0]}); run without graphs (SpikingModel.graph(False))"
            ) from error
        self.graphs.append(graph)
        self.outputs.append(output)
        self.state = [m.state() for m in self.modules]


def check_no_hooks(network: nn.Module) -> None:
    """A graph replays kernels only: Python hooks (a spike monitor) would run once, at capture."""
    for path, module in network.named_modules():
        if module._forward_hooks or module._forward_pre_hooks:
            raise GraphError(
                f"CUDA graphs cannot run forward hooks, and {path or '<root>'} "
                f"({type(module).__name__}) has some (a SpikeMonitor?): detach them or run "
                "without graphs (SpikingModel.graph(False))"
            )
