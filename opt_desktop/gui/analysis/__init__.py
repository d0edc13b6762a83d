"""The analyses the window runs on the session's runs, one module each, all started one way (runner.py):

- lens.py: the logit lens of the selected token, and of every position of each run (in the background);
- compare.py: the two runs the Compare tab shows, and their divergence;
- head_importance.py: each head of the shown run scaled in turn;
- attribution.py: why this token? (the earlier tokens that made it);
- patching.py: where does the fact live? (activation patching between two runs);
- routes.py: where did this token's information come from? (information-flow routes, computed live).

`Analysis` puts them together for the main window: what each can run on now, and what each kept
with the shown run.
"""

from __future__ import annotations

from PySide6.QtCore import QObject

from .attribution import AttributionAnalysis
from .compare import CompareAnalysis
from .head_importance import HeadImportanceAnalysis
from .head_rows import HeadRowsAnalysis
from .lens import LensAnalysis
from .patching import PatchingAnalysis
from .routes import RoutesAnalysis
from .runner import JobView, Runner, ViewHooks

__all__ = ["Analysis", "JobView", "Runner", "ViewHooks"]


class Analysis(QObject):
    def __init__(self, controller, keeper, presenter, views, parent: QObject | None = None):
        """`views` has tabs, inspector, output, compare, importance, attribution, patching, routes, banner
        and show_prompt_action; each analysis connects to its views' signals."""
        super().__init__(parent)
        self.presenter = presenter
        self.v = views
        report = views.banner.show_error  # an error of a job the person started: one line, Details… has the rest
        parts = (controller, keeper, presenter, views, report)
        self.lens = LensAnalysis(*parts)
        self.head_rows = HeadRowsAnalysis(*parts)
        self.compare = CompareAnalysis(*parts)
        self.importance = HeadImportanceAnalysis(*parts)
        self.attribution = AttributionAnalysis(*parts)
        self.patching = PatchingAnalysis(*parts)
        self.routes = RoutesAnalysis(*parts)
        presenter.shown_changed.connect(self.show_run_analyses)
        views.importance.head_clicked.connect(self.show_head)

    # What the main window calls.
    def refresh_compare_choices(self) -> None:
        self.compare.refresh_choices()

    def refresh_compare_availability(self) -> None:
        self.compare.refresh_availability()

    def forget_compared(self) -> None:
        self.compare.forget_compared()

    def refresh_patching_choices(self) -> None:
        self.patching.refresh_choices()

    def update_availability(self) -> None:
        for analysis in (self.importance, self.attribution, self.patching, self.routes):
            analysis.update_availability()

    def show_run_analyses(self) -> None:
        """What was computed on the shown run and kept with it: its latest head-importance map, its
        latest attribution, its latest patching, its routes."""
        trace = self.presenter.trace
        for analysis in (self.importance, self.attribution, self.patching, self.routes):
            analysis.show_kept(trace)

    def show_head(self, layer: int, head: int) -> None:
        self.v.tabs.setCurrentWidget(self.v.inspector)
        self.v.inspector.tabs.setCurrentWidget(self.v.inspector.attention)
        self.v.inspector.attention.show_head(layer, head)
