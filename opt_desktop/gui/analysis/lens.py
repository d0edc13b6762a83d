"""The logit lens: of the token selected in the Inspector (asked for when its tab shows), and of every
position of each finished run, computed while the window is idle and kept with the run."""

from __future__ import annotations

import weakref

from ...engine.messages.requests import LensRequest, LensTableRequest
from ..run_commands import same_model
from .part import AnalysisPart
from .runner import Runner, ViewHooks


class LensAnalysis(AnalysisPart):
    def __init__(self, *parts):
        super().__init__(*parts)
        self.inspector = self.v.inspector
        self._no_lens: weakref.WeakSet = weakref.WeakSet()  # runs whose lens table failed
        # A token's lens: a newer selection replaces the one on its way.
        self.token = Runner(self.controller, ViewHooks(set_message=self.inspector.set_lens_unavailable),
                            on_done=lambda result, _origin: self.inspector.set_lens(result))
        # One run's table at a time, in the background: whatever the person starts stops it.
        self.table = Runner(self.controller, on_done=self._keep_table, on_end=self._table_ended)
        self.controller.busy_changed.connect(self.schedule_tables)
        self.controller.model_changed.connect(lambda _: self.schedule_tables())
        self.inspector.lens_requested.connect(self.request)

    # --- one token ---------------------------------------------------------------------------------

    def request(self, position: int) -> None:
        trace = self.presenter.trace
        if trace is None:
            return
        self.token.cancel()
        stored = trace.lens_at(position)
        if stored is not None:  # computed after the run from exact rows, and kept with it: no model needed
            self.inspector.set_lens(stored, trace.lens_ranks(position))
            return
        if not same_model(self.controller.model, trace):
            self.inspector.set_lens_unavailable(f"the logit lens needs this run's model: load "
                                                f"{trace.started.model.label} ({trace.started.model.dtype})")
            return
        rows = trace.residual_rows(position)
        if rows is None:
            reason = ("the last token was never fed to the model" if position == trace.length - 1
                      else "residual rows were not kept for this run")
            self.inspector.set_lens_unavailable(reason)
            return
        self.token.start(LensRequest(rows, trace.next_token(position), position), origin=trace)

    # --- every position of a run, kept with it -------------------------------------------------------

    def schedule_tables(self) -> None:
        """While nothing else runs, compute (one run at a time) the lens table of every finished run of
        the loaded model that lacks one; anything the person starts makes it give way."""
        c = self.controller
        if c.closed or self.table.running or c.is_busy or c.model is None:
            return
        for trace in reversed(self.keeper.session.runs):  # the newest first
            if (trace.finished is not None and trace.finished.n_tokens and trace not in self._no_lens
                    and trace.lens_table() is None and same_model(c.model, trace)):
                self.table.start(LensTableRequest(**trace.lens_request()), origin=trace)
                return

    def _keep_table(self, table, trace) -> None:
        if trace not in self.keeper.session.runs or trace.lens_table() is not None:
            return
        trace.set_lens_table(table)
        self.keeper.set_modified(True)
        position = self.inspector.selected_position()
        if trace is self.presenter.trace and position is not None:
            self.request(position)

    def _table_ended(self, end, trace) -> None:
        if end.reason == "error":
            self._no_lens.add(trace)  # not tried again in this sitting; the log has why
        self.schedule_tables()
