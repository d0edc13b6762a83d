"""Where did this token's information come from? The information-flow routes of the shown run: the ones
kept with it, else computed while the Routes tab is in view (or on its button) and nothing else runs,
and kept with it. The routes being computed are always the shown run's: showing another run stops
them, and nothing of them arrives."""

from __future__ import annotations

import weakref

from ...engine.messages.requests import RoutesRequest
from ...session.route_graph import keep_routes, stored_routes
from ..run_commands import same_model
from .part import TabAnalysis


class RoutesAnalysis(TabAnalysis):
    VIEW = "routes"

    def __init__(self, *parts):
        super().__init__(*parts)
        self._failed: weakref.WeakSet = weakref.WeakSet()  # runs whose routes failed or were stopped: not retried unasked
        self.view.position_clicked.connect(self.v.output.set_selected)
        self.v.inspector.position_selected.connect(self.view.select_position)
        self.v.tabs.currentChanged.connect(lambda _: self.compute_if_wanted())

    def availability(self) -> tuple[bool, str]:
        trace = self.presenter.trace
        if trace is None:
            return False, "Generate or open a run first."
        if trace.finished is None:
            return False, "The routes of this run can be computed once it has ended."
        if not same_model(self.controller.model, trace):
            return False, (f"Load {trace.started.model.label} ({trace.started.model.dtype}) to compute the routes "
                           "of this run.")
        if self.controller.is_busy:
            return False, "Wait for the running job to end (or stop it)."
        return True, ""

    def update_availability(self) -> None:
        if self.runner.running:
            return
        self.view.set_available(*self.availability())
        self.compute_if_wanted()

    def show_kept(self, trace) -> None:
        """The routes kept with the shown run (no model needed), else none until they are computed."""
        if self.runner.running and self.runner.origin is not trace:
            self.runner.cancel()  # they were another run's
        if not self.runner.running:
            result = stored_routes(trace) if trace is not None else None
            self.view.set_routes(result, trace.pieces if result is not None else None)
        self.update_availability()

    def compute_if_wanted(self) -> None:
        """Live: the tab in view, its run without routes, the model loaded and idle -> compute them."""
        trace = self.presenter.trace
        if (self.v.tabs.currentWidget() is self.view and self.view.graph is None and not self.runner.running
                and trace is not None and trace not in self._failed and self.availability()[0]):
            self.start()

    def start(self) -> None:
        trace = self.presenter.trace
        if self.runner.running or not self.availability()[0]:
            self.update_availability()
            return
        self._failed.discard(trace)
        self.runner.start(RoutesRequest(**trace.lens_request()), origin=trace)  # its tokens, hidden positions, masks

    def _ended(self, end, trace) -> None:
        if end.reason in ("error", "cancelled"):
            self._failed.add(trace)  # said in the tab (and an error in the banner): not started again unasked
        self.update_availability()

    def _keep(self, result, trace) -> None:
        if trace in self.keeper.session.runs and list(result.token_ids) == list(trace.token_ids):
            keep_routes(trace, result)  # saved with the session
            self.keeper.set_modified(True)
        if trace is self.presenter.trace:
            self.view.set_routes(result, trace.pieces)
