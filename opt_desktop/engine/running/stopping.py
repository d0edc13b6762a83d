"""Stop inside a forward pass: before every decoder layer.

A 1,500-token prefill of opt-125m takes seconds; waiting for it to end before honouring Stop (or
closing the window) is too long. Hooks on each decoder layer call the job's `check()`; a stopped
job raises JobCancelled there, which unwinds the forward pass and ends the job as "cancelled". The
prompt's statistics, computed after its first token (capture.py), check it between their blocks.
"""

from __future__ import annotations

from ..messages.job_context import JobContext


class StopBetweenLayers:
    """Context manager: while active, a stop of `job` ends the model's forward at the next layer."""

    def __init__(self, model, job: JobContext | None):
        self.layers = list(model.model.decoder.layers)
        self.job = job
        self._handles: list = []

    def __enter__(self) -> "StopBetweenLayers":
        if self.job is None:
            return self
        for layer in self.layers:
            self._handles.append(layer.register_forward_pre_hook(self._check))
        return self

    def _check(self, module, args) -> None:
        self.job.check()

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
