"""Compare: which two runs the Compare tab shows, and the divergence between them (computed by the
engine, on request, teacher-forced on the first run's tokens)."""

from __future__ import annotations

from ...engine.messages.interventions_spec import normalize_head_mask
from ...engine.messages.requests import DivergenceRequest
from ...session.compare import compare_runs
from ...session.describe import run_title
from ..run_commands import same_model
from .part import AnalysisPart
from .runner import Runner


class CompareAnalysis(AnalysisPart):
    def __init__(self, *parts):
        super().__init__(*parts)
        self.compared: tuple[int | None, int | None] = (None, None)  # the runs the Compare tab shows
        panel = self.v.compare.divergence_panel
        self.divergence = Runner(self.controller, panel, on_done=lambda result, _: panel.set_divergence(result),
                                 report=self.report)
        self.v.compare.runs_chosen.connect(self.compare_runs)
        self.v.compare.divergence_requested.connect(self.request_divergence)

    def refresh_choices(self) -> None:
        """The run choices of the Compare tab; only while it is in view (it redraws two texts and plots)."""
        if self.v.tabs.currentWidget() is not self.v.compare:
            return  # it catches up when shown
        runs = self.keeper.session.runs
        self.v.compare.set_choices([run_title(i, t) for i, t in enumerate(runs)])

    def compare_runs(self, a: int, b: int) -> None:
        runs = self.keeper.session.runs
        self.divergence.cancel()  # it belonged to the pair shown before
        if not (0 <= a < len(runs) and 0 <= b < len(runs)):
            self.v.compare.set_runs(None, None)
            return
        self.compared = (a, b)
        self.v.compare.set_runs(runs[a], runs[b], f"#{a + 1}", f"#{b + 1}")
        self.refresh_availability()

    def forget_compared(self) -> None:
        self.divergence.cancel()
        self.compared = (None, None)
        self.v.compare.set_runs(None, None)
        self.refresh_choices()

    def refresh_availability(self) -> None:
        a, b = self.compared
        runs = self.keeper.session.runs
        if a is None or b is None or max(a, b) >= len(runs):
            return
        ra, rb = runs[a], runs[b]
        if not compare_runs(ra, rb).same_model:
            self.v.compare.set_divergence_available(False, "The two runs used different models: the KL divergence "
                                                           "between their distributions is not defined here.")
        elif not same_model(self.controller.model, ra):
            self.v.compare.set_divergence_available(False, f"Load {ra.started.model.label} "
                                                           f"({ra.started.model.dtype}) to compute the divergence.")
        else:
            self.v.compare.set_divergence_available(True, "")

    def request_divergence(self) -> None:
        a, b = self.compared
        if a is None or b is None:
            return
        base, other = self.keeper.session.runs[a], self.keeper.session.runs[b]
        # Teacher-forced on the baseline's tokens: what the other run's interventions change there.
        self.divergence.start(DivergenceRequest(
            tuple(base.token_ids), normalize_head_mask(base.started.head_mask),
            normalize_head_mask(other.started.head_mask), tuple(base.started.hidden_positions),
            tuple(other.started.hidden_positions)), origin=(base, other))
