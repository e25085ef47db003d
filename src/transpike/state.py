"""Per-input state of spiking modules.

State (membrane, running sums, step counter) belongs to one input sequence: it is created on the
first step and cleared by ``reset()``, which :meth:`transpike.SpikingModel.simulate` calls before
every new input, so nothing leaks from one batch to the next.
"""

from __future__ import annotations

import abc


class Stateful(abc.ABC):
    """A module whose output depends on the steps it has seen since its last :meth:`reset`."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget every step seen so far (the next call is step t = 1)."""
