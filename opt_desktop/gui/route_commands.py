"""The Routes tab's commands: show the routes kept with the shown run, and compute them when it has
none, while the tab is in view (or on its button) and nothing else runs."""

from __future__ import annotations

import weakref
from typing import Any, Callable

from PySide6.QtCore import QObject

from ..engine.jobs.job import JobEnd, JobProgress
from ..engine.messages.requests import RoutesRequest
from ..session.route_graph import keep_routes, stored_routes
from .run_commands import same_model


async def run_analysis(controller, view, request, origin: Any, keep: Callable[[Any, Any], None]) -> JobEnd:
    """Start the job for `request`, show its progress on `view` (JobControls), await its end and hand
    a finished result to `keep(origin, result)`: the one way this tab runs an analysis, to be switched
    to the window's shared analysis runner."""

    def on_events(events: list) -> None:
        progress = [e for e in events if isinstance(e, JobProgress)]
        if progress:
            view.set_progress(progress[-1].done, progress[-1].total)

    job = controller.submit(request, origin=origin, on_events=on_events)
    view.set_running(True)
    try:
        end = await controller.wait(job)
    finally:
        view.set_running(False)
    if end.reason == "done":
        keep(origin, end.result)
    return end


class RouteCommands(QObject):
    def __init__(self, controller, keeper, presenter, views, parent: QObject | None = None):
        """`views` has routes, tabs, inspector, output and banner."""
        super().__init__(parent)
        self.controller, self.keeper, self.presenter, self.v = controller, keeper, presenter, views
        self._failed: weakref.WeakSet = weakref.WeakSet()  # runs whose routes failed or were stopped: not retried unasked
        view = views.routes
        view.run_requested.connect(self.start)
        view.stop_requested.connect(lambda: controller.stop_all(["routes"]))
        view.position_clicked.connect(views.output.set_selected)
        views.inspector.position_selected.connect(view.select_position)
        presenter.shown_changed.connect(self.show_run)
        views.tabs.currentChanged.connect(lambda _: self.compute_if_wanted())
        controller.busy_changed.connect(self.update_availability)
        controller.model_changed.connect(lambda _: self.update_availability())

    def show_run(self) -> None:
        trace = self.presenter.trace
        result = stored_routes(trace) if trace is not None else None
        self.v.routes.set_routes(result, trace.pieces if result is not None else None)
        self.update_availability()

    def update_availability(self) -> None:
        trace, view = self.presenter.trace, self.v.routes
        if self.controller.jobs("routes"):
            return
        if trace is None or trace.finished is None:
            view.set_available(False, "Generate or open a run first.")
        elif not same_model(self.controller.model, trace):
            view.set_available(False, f"Load {trace.started.model.label} ({trace.started.model.dtype}) to compute "
                                      "the routes of this run.")
        elif self.controller.is_busy:
            view.set_available(False, "Wait for the running job to end (or stop it).")
        else:
            view.set_available(True, "")
        self.compute_if_wanted()

    def compute_if_wanted(self) -> None:
        """Live: the tab in view, its run without routes, the model loaded and idle -> compute them."""
        view, trace = self.v.routes, self.presenter.trace
        if (self.v.tabs.currentWidget() is view and view.graph is None and view.run_button.isEnabled()
                and trace is not None and trace not in self._failed):
            self.start()

    def start(self) -> None:
        trace = self.presenter.trace
        if (trace is None or trace.finished is None or self.controller.is_busy
                or not same_model(self.controller.model, trace)):
            self.update_availability()
            return
        self._failed.discard(trace)
        request = RoutesRequest(**trace.lens_request())  # its tokens, hidden positions and head masks
        self.controller.spawn(self._run(request, trace))

    async def _run(self, request, trace) -> None:
        end = await run_analysis(self.controller, self.v.routes, request, trace, self._keep)
        if end.reason == "error":
            self._failed.add(trace)
            self.v.routes.set_message(end.message)
            self.v.banner.show_error(end.message, end.details)
        elif end.reason == "cancelled":
            self._failed.add(trace)  # stopped: not started again until asked
            self.v.routes.set_message("Stopped.")
        self.update_availability()

    def _keep(self, trace, result) -> None:
        if trace in self.keeper.session.runs and list(result.token_ids) == list(trace.token_ids):
            keep_routes(trace, result)  # saved with the session
            self.keeper.set_modified(True)
        if trace is self.presenter.trace:
            self.v.routes.set_routes(result, trace.pieces)
