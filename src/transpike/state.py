"""Per-input state of spiking modules.

State (membrane, running sums, step counter) belongs to one input sequence: it is created on the
first step and cleared by ``reset()``, which :meth:`transpike.SpikingModel.simulate` calls before
every new input, so nothing leaks from one batch to the next.
"""

from __future__ import annotations

import abc


class Stateful(abc.ABC):
    """A module whose output depends on the steps it has seen since its last :meth:`reset`."""

    #: the attributes holding the state: what reset() clears, what ``SpikingModel.state_bytes``
    #: counts, and what CUDA graphs keep alive between captures (graphs.py)
    state_names: tuple[str, ...] = ()

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget every step seen so far (the next call is step t = 1)."""

    def state(self) -> dict:
        """The state attributes by name (the objects themselves, not copies)."""
        return {name: getattr(self, name) for name in self.state_names}

    def restore(self, state: dict) -> None:
        """Set the state attributes back to what :meth:`state` returned."""
        for name, value in state.items():
            setattr(self, name, value)
