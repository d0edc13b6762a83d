"""What the analyses can run on now, and running them: the logit lens of a token, the divergence of
two compared runs, head importance of the shown run. Each is one job awaited in one coroutine."""

from __future__ import annotations

from PySide6.QtCore import QObject

from ..engine.interventions_spec import normalize_head_mask
from ..engine.jobs import JobProgress
from ..engine.requests import DivergenceRequest, HeadImportanceRequest, LensRequest
from ..session.compare import compare_runs
from .run_commands import same_model
from .widgets.run_list import run_title


class Analysis(QObject):
    def __init__(self, controller, keeper, presenter, views, parent: QObject | None = None):
        """`views` has tabs, inspector, compare, importance, banner."""
        super().__init__(parent)
        self.controller = controller
        self.keeper = keeper
        self.presenter = presenter
        self.v = views
        self.compared: tuple[int | None, int | None] = (None, None)  # the runs the Compare tab shows

    # --- the logit lens -------------------------------------------------------------------------

    def request_lens(self, position: int) -> None:
        trace = self.presenter.trace
        if trace is None:
            return
        if not same_model(self.controller.model, trace):
            self.v.inspector.set_lens_unavailable(f"the logit lens needs this run's model: load "
                                                  f"{trace.started.model.label} ({trace.started.model.dtype})")
            return
        rows = trace.residual_rows(position)
        if rows is None:
            reason = ("the last token was never fed to the model" if position == trace.length - 1
                      else "residual rows were not kept for this run")
            self.v.inspector.set_lens_unavailable(reason)
            return
        job = self.controller.submit(LensRequest(rows, trace.next_token(position), position))
        self.controller.spawn(self._show_lens(job))

    async def _show_lens(self, job) -> None:
        end = await self.controller.wait(job)
        if end.reason == "done":
            if end.result.position == self.v.inspector.selected_position():
                self.v.inspector.set_lens(end.result)
        elif end.reason == "error":
            self.v.inspector.set_lens_unavailable(end.message)

    # --- compare ----------------------------------------------------------------------------------

    def refresh_compare_choices(self) -> None:
        """The run choices of the Compare tab; only while it is in view (it redraws two texts and plots)."""
        if self.v.tabs.currentWidget() is not self.v.compare:
            return  # it catches up when shown
        runs = self.keeper.session.runs
        self.v.compare.set_choices([run_title(i, t) for i, t in enumerate(runs)])

    def compare_runs(self, a: int, b: int) -> None:
        runs = self.keeper.session.runs
        if not (0 <= a < len(runs) and 0 <= b < len(runs)):
            self.v.compare.set_runs(None, None)
            return
        self.compared = (a, b)
        self.v.compare.set_runs(runs[a], runs[b], f"#{a + 1}", f"#{b + 1}")
        self.refresh_compare_availability()

    def forget_compared(self) -> None:
        self.compared = (None, None)
        self.v.compare.set_runs(None, None)
        self.refresh_compare_choices()

    def refresh_compare_availability(self) -> None:
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
        runs = self.keeper.session.runs
        if a is None or b is None:
            return
        base, other = runs[a], runs[b]
        # Teacher-forced on the baseline's tokens: what the other run's interventions change there.
        job = self.controller.submit(DivergenceRequest(
            tuple(base.token_ids), normalize_head_mask(base.started.head_mask),
            normalize_head_mask(other.started.head_mask), tuple(base.started.hidden_positions),
            tuple(other.started.hidden_positions)))
        self.controller.spawn(self._show_divergence(job))

    async def _show_divergence(self, job) -> None:
        end = await self.controller.wait(job)
        if end.reason == "done":
            self.v.compare.set_divergence(end.result)
        else:
            self.v.compare.set_divergence(None, end.message)

    # --- head importance --------------------------------------------------------------------------

    def update_availability(self) -> None:
        trace, info = self.presenter.trace, self.controller.model
        view = self.v.importance
        if trace is None or trace.finished is None:
            view.set_available(False, "Generate or open a run first: head importance ablates each "
                                      "head on the shown run's text.")
        elif not same_model(info, trace):
            view.set_available(False, f"Load {trace.started.model.label} ({trace.started.model.dtype}) "
                                      "to measure head importance on this run.")
        else:
            view.set_available(not self.controller.is_busy or bool(self.controller.jobs("head_importance")), "")

    def start_importance(self, scale: float) -> None:
        trace = self.presenter.trace
        if (trace is None or trace.finished is None or not same_model(self.controller.model, trace)
                or self.controller.is_busy):
            self.update_availability()
            return
        # Measured on the run as it was made: its own head mask and hidden tokens stay in place.
        request = HeadImportanceRequest(tuple(trace.token_ids), trace.n_prompt, scale,
                                        normalize_head_mask(trace.started.head_mask),
                                        tuple(trace.started.hidden_positions))
        job = self.controller.submit(request, on_events=self._on_importance_events)
        self.v.importance.set_running(True)
        self.controller.spawn(self._show_importance(job))

    def _on_importance_events(self, events: list) -> None:
        progress = [e for e in events if isinstance(e, JobProgress)]
        if progress:
            self.v.importance.set_progress(progress[-1].done, progress[-1].total)

    async def _show_importance(self, job) -> None:
        end = await self.controller.wait(job)
        self.v.importance.set_running(False)
        if end.result is not None:
            self.v.importance.set_result(end.result)  # partial when stopped
        if end.reason == "error":
            self.v.banner.show_error(end.message, end.details)
        self.update_availability()

    def stop_importance(self) -> None:
        self.controller.stop_all(["head_importance"])

    def show_head(self, layer: int, head: int) -> None:
        self.v.tabs.setCurrentWidget(self.v.inspector)
        self.v.inspector.tabs.setCurrentWidget(self.v.inspector.attention)
        self.v.inspector.attention.show_head(layer, head)
