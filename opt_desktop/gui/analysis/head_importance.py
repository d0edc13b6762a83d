"""Head importance of the shown run: each head scaled in turn, the run's generated tokens scored again.
The map is kept with the run it was measured on (a stopped measurement's partial map too)."""

from __future__ import annotations

from ...engine.messages.interventions_spec import normalize_head_mask
from ...engine.messages.requests import HeadImportanceRequest
from ..run_commands import same_model
from .part import TabAnalysis


class HeadImportanceAnalysis(TabAnalysis):
    VIEW = "importance"

    def update_availability(self) -> None:
        trace, info = self.presenter.trace, self.controller.model
        self.view.set_model_shape((trace.n_layers, trace.n_heads) if trace is not None else None)
        if trace is None or trace.finished is None:
            self.view.set_available(False, "Generate or open a run first: head importance ablates each "
                                           "head on the shown run's text.")
        elif not same_model(info, trace):
            self.view.set_available(False, f"Load {trace.started.model.label} ({trace.started.model.dtype}) "
                                           "to measure head importance on this run.")
        else:
            self.view.set_available(not self.controller.is_busy or self.runner.running, "")

    def show_kept(self, trace) -> None:
        """The latest map kept with the shown run, unless a measurement is in view."""
        if not self.runner.running:
            kept = trace.head_importances() if trace is not None else []
            self.view.set_result(kept[-1] if kept else None)

    def start(self, scale: float) -> None:
        trace = self.presenter.trace
        if (trace is None or trace.finished is None or not same_model(self.controller.model, trace)
                or self.controller.is_busy):
            self.update_availability()
            return
        # Measured on the run as it was made: its own head mask and hidden tokens stay in place.
        request = HeadImportanceRequest(tuple(trace.token_ids), trace.n_prompt, scale,
                                        normalize_head_mask(trace.started.head_mask),
                                        tuple(trace.started.hidden_positions))
        self.runner.start(request, origin=trace)

    def _keep(self, result, trace) -> None:
        self.view.set_result(result)  # partial when stopped
        if trace in self.keeper.session.runs:
            trace.add_head_importance(result)  # kept with the run, saved with the session
            self.keeper.set_modified(True)
