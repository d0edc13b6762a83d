"""Stop inside a forward pass: before every decoder layer.

A 1,500-token prefill of opt-125m takes seconds; waiting for it to end before honouring Stop (or
closing the window) is too long. Hooks on each decoder layer check the job's stop event; a set
event raises JobCancelled, which unwinds the forward pass and ends the job as "cancelled". The
prompt's statistics, computed after its first token (capture.py), check it between their blocks.
"""

from __future__ import annotations

import threading

from ..messages.errors import JobCancelled


def raise_if_stopped(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise JobCancelled("Stopped.")


class StopBetweenLayers:
    """Context manager: while active, `stop` being set ends the model's forward at the next layer."""

    def __init__(self, model, stop: threading.Event | None):
        self.layers = list(model.model.decoder.layers)
        self.stop = stop
        self._handles: list = []

    def __enter__(self) -> "StopBetweenLayers":
        if self.stop is None:
            return self
        for layer in self.layers:
            self._handles.append(layer.register_forward_pre_hook(self._check))
        return self

    def _check(self, module, args) -> None:
        raise_if_stopped(self.stop)

    def __exit__(self, *exc) -> None:
        if self.stop is None:
            return
        for h in self._handles:
            h.remove()
        self._handles.clear()
