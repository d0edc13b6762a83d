"""Which run the window shows, and keeping every view of it up to date while it streams.

The output follows a streaming run at the event pump's ~30 Hz; the inspector's plots cost 15-50 ms
a repaint, so while tokens stream it follows once a second, and fully when the run ends.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Signal

from ..engine.running.text import token_piece
from ..session import RunTrace
from .session_keeper import SessionKeeper

INSPECTOR_REFRESH_S = 1.0


class RunPresenter(QObject):
    shown_changed = Signal()  # another run (or none) is shown
    run_changed = Signal()  # the shown run grew or ended

    def __init__(self, keeper: SessionKeeper, views, tokenizer_fn, parent: QObject | None = None):
        """`views` has output, inspector, run_list, run_details, run_status and tabs; `tokenizer_fn()` the loaded
        model's tokenizer (None without a model)."""
        super().__init__(parent)
        self.keeper = keeper
        self.v = views
        self._tokenizer = tokenizer_fn
        self.current: int | None = None
        self._inspector_refreshed = 0.0
        self._known_pieces: tuple[tuple, dict[int, str]] = ((), {})

    @property
    def trace(self) -> RunTrace | None:
        runs = self.keeper.session.runs
        return runs[self.current] if self.current is not None and self.current < len(runs) else None

    def show_run(self, index: int | None) -> None:
        """Show one run of the session in every view."""
        runs = self.keeper.session.runs
        self.current = index if index is not None and 0 <= index < len(runs) else None
        trace = self.trace
        v = self.v
        v.output.set_trace(trace)
        v.inspector.set_trace(trace)
        v.output.set_hidden_positions(trace.started.hidden_positions if trace is not None else ())
        v.run_list.set_current(self.current)
        v.run_details.set_trace(trace)
        if trace is not None and trace.finished is not None:
            v.run_status.show_finished(trace.finished)
        self._inspector_refreshed = time.monotonic()
        self.shown_changed.emit()

    # --- a streaming run -----------------------------------------------------------------------

    def run_started(self, index: int) -> None:
        self.v.run_list.refresh()
        self.show_run(index)
        self.v.run_status.clear()

    def run_updated(self, trace: RunTrace) -> None:
        if trace is not self.trace:
            return  # the person is looking at another run
        v = self.v
        v.output.refresh()
        now = time.monotonic()
        if now - self._inspector_refreshed >= INSPECTOR_REFRESH_S:
            self._inspector_refreshed = now
            if v.tabs.currentWidget() is v.inspector:
                v.inspector.refresh()
            v.run_list.refresh()
        v.run_status.show_progress(trace)

    def run_finished(self, trace: RunTrace) -> None:
        v = self.v
        v.run_list.refresh()
        if trace is self.trace:
            v.output.refresh()
            v.inspector.refresh()
            v.run_details.set_trace(trace)
            if trace.finished is not None:
                v.run_status.show_finished(trace.finished)
        self.run_changed.emit()

    # --- token text ------------------------------------------------------------------------------

    def piece(self, token_id: int) -> str:
        """A token shown alone: as the shown run recorded it (a reopened session needs no model), else
        from the loaded tokenizer."""
        trace = self.trace
        if trace is not None:
            key = (id(trace), trace.length)
            if self._known_pieces[0] != key:
                self._known_pieces = (key, trace.known_pieces())
            piece = self._known_pieces[1].get(token_id)
            if piece is not None:
                return piece
        tok = self._tokenizer()
        return f"#{token_id}" if tok is None else token_piece(tok, token_id)
