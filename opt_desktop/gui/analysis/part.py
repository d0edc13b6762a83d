"""What every analysis of the window works with, given once by `Analysis`."""

from __future__ import annotations

from .runner import ReportFn, Runner


class AnalysisPart:
    def __init__(self, controller, keeper, presenter, views, report: ReportFn | None = None):
        """The controller (the window's door to the engine), the keeper (the session), the presenter (the
        shown run), the window's views by name, and `report(line, details)` for an error of a job the
        person started (the banner)."""
        self.controller = controller
        self.keeper = keeper
        self.presenter = presenter
        self.v = views
        self.report = report


class TabAnalysis(AnalysisPart):
    """An analysis with a tab of its own (`VIEW`, the name of the view). A subclass defines `start`, which
    the tab's run_requested calls with the tab's choices, and `_keep(result, origin)`, which gets what a
    job gave (and may define `_ended(end, origin)`, told of every end); the tab's Stop stops the job (a
    partial result still arrives), an error goes to the tab and the banner."""

    VIEW = ""

    def __init__(self, *parts):
        super().__init__(*parts)
        self.view = getattr(self.v, self.VIEW)
        self.runner = Runner(self.controller, self.view, on_done=self._keep, on_end=self._ended, report=self.report)
        self.view.run_requested.connect(self.start)
        self.view.stop_requested.connect(self.runner.stop)

    def _ended(self, end, origin) -> None:
        """Whatever way its job ended (after `_keep` when there was a result)."""
