"""The Inspector tab: the token table on top, and tabs of views that follow one selected position.

Only the visible tab is redrawn on refresh(); the others are marked stale and catch up when shown,
so refresh() stays cheap while a run grows. The logit lens is computed elsewhere (the engine):
the Inspector asks for it with `lens_requested` and shows what `set_lens` hands back.

Under the header, a line states the run's interventions (heads masked, mid-run mask changes,
prompt tokens hidden from attention) and the head mask being edited for the next run, when it differs.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QStackedWidget, QTabWidget, QVBoxLayout, QWidget

from ...engine.messages.events import LensResult
from ...engine.messages.interventions_spec import format_head_mask
from ...formatting import position_ranges
from ...engine.messages.settings import HeadScale
from ...session.describe import mask_texts
from ...session.trace import RunTrace
from .attention_view import AttentionView
from .head_mask_editor import mask_dict
from .hidden_view import HiddenView
from .lens_view import LensView
from .splitter import splitter
from .token_table import TokenTable, TokenTexts, format_prob, quote_piece


class Inspector(QWidget):
    position_selected = Signal(int)  # the user picked a token in one of the views
    lens_requested = Signal(int)  # the lens tab needs the logit lens at this position
    head_mask_changed = Signal(object)  # tuple[HeadScale, ...]: the user edited the mask in the attention grid
    fork_requested = Signal(int, int)  # (position, token id): fork the run there with that token

    def __init__(self, piece_fn: Callable[[int], str] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self._trace: RunTrace | None = None
        self._pos: int | None = None
        # What the lens tab holds: ("none" | "pending" | "result" | "unavailable" | "unfed", position).
        # "unfed" means the Inspector itself found no residual yet; it re-asks once the token is fed.
        self._lens_state: tuple[str, int | None] = ("none", None)
        self.texts = TokenTexts(piece_fn)

        self.header = QLabel()
        self.header.setTextFormat(Qt.TextFormat.PlainText)
        self.interventions = QLabel()
        self.interventions.setTextFormat(Qt.TextFormat.PlainText)
        self.interventions.setWordWrap(True)
        self.interventions.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = TokenTable(self.texts)
        self.hidden = HiddenView()
        self.attention = AttentionView()
        self.lens = LensView()
        self.tabs = QTabWidget()
        # Alt+S, Alt+A, Alt+L pick a view from the keyboard (the menus use F, R, V, H).
        self.tabs.addTab(self.hidden, "Hidden &states")
        self.tabs.addTab(self.attention, "&Attention")
        self.tabs.addTab(self.lens, "Logit &lens")
        self.tabs.setDocumentMode(True)
        self._stale: set[QWidget] = set()

        # About 9 rows of tokens over the views at 1000 × 700.
        split = splitter(Qt.Orientation.Vertical, (self.table, 2), (self.tabs, 3), sizes=(260, 440))
        # No run: one centred message rather than an empty table over empty plots.
        self.placeholder = QLabel("Nothing to inspect yet.\n\nGenerate some text: every token of the run "
                                  "appears here, with what the model computed for it.")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.placeholder)
        self.pages.addWidget(split)
        self._main_page = split

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.header)
        layout.addWidget(self.interventions)
        layout.addWidget(self.pages, 1)

        self.table.position_selected.connect(self._user_picked)
        self.hidden.position_selected.connect(self._user_picked)
        self.attention.position_selected.connect(self._user_picked)
        self.tabs.currentChanged.connect(self._on_tab_changed)
        self.table.fork_requested.connect(self.fork_requested)
        self.attention.head_mask_changed.connect(self._on_head_mask_edited)
        self._interventions_key: tuple | None = None
        self._update_header()

    # --- public API ----------------------------------------------------------------------------

    def set_trace(self, trace: RunTrace | None) -> None:
        """Show a run (None: nothing). Selects the last prompt token, whose prediction is the first generated one."""
        self._trace = trace
        self._lens_state = ("none", None)
        self.texts.set_trace(trace)
        self.table.set_trace(trace)
        for view in (self.hidden, self.attention):
            view.set_trace(trace)
        self._stale.clear()
        self.pages.setCurrentWidget(self._main_page if trace is not None else self.placeholder)
        pos = None
        if trace is not None and trace.length:
            pos = max(trace.n_prompt - 1, 0)
        self._set_position(pos, force=True)
        self._update_interventions(force=True)

    def refresh(self) -> None:
        """The trace grew: add rows, redraw the visible tab, let the hidden ones catch up later."""
        if self._trace is None:
            return
        self.table.refresh()
        if self._pos is None and self._trace.length:
            self._set_position(max(self._trace.n_prompt - 1, 0))
        current = self.tabs.currentWidget()
        for view in (self.hidden, self.attention):
            if view is current:
                view.refresh()
            else:
                self._stale.add(view)
        state, pos = self._lens_state
        if state == "unfed" and pos == self._pos:
            self._lens_state = ("none", None)
            self._request_lens()  # the token has been fed since: its lens may be readable now
        self._update_header()
        self._update_interventions()

    def select_position(self, pos: int | None) -> None:
        """Follow `pos` (from outside: does not emit position_selected)."""
        if pos is not None and (self._trace is None or not (0 <= pos < self._trace.length)):
            return
        self._set_position(pos)

    def selected_position(self) -> int | None:
        return self._pos

    def set_lens(self, result: LensResult | None, ranks=None) -> None:
        """Show the lens at the selected position; `ranks` ((L+1,) 1-based rank of the next token per row,
        0 where there is none) when known, as a stored lens table knows them."""
        if result is None:
            self._lens_state = ("none", None)
            self.lens.set_result(None)
            return
        if result.position != self._pos:
            return  # a lens for a position the user has already left
        self._lens_state = ("result", result.position)
        self.lens.set_result(result, self._next_piece(result), ranks)

    def set_lens_unavailable(self, reason: str) -> None:
        self._lens_state = ("unavailable", self._pos)
        self.lens.set_unavailable(reason)

    def head_mask(self) -> tuple[HeadScale, ...]:
        """The head mask being edited in the attention grid (for the next run), sorted by (layer, head)."""
        return self.attention.head_mask()

    def set_head_mask(self, mask: Iterable) -> None:
        """Show `mask` (HeadScale items or (layer, head, scale) tuples) as the one being edited; no signal."""
        self.attention.set_head_mask(mask)
        self._update_interventions(force=True)

    def _on_head_mask_edited(self, mask: tuple[HeadScale, ...]) -> None:
        self._update_interventions(force=True)
        self.head_mask_changed.emit(mask)

    # --- internals -----------------------------------------------------------------------------

    def _user_picked(self, pos: int) -> None:
        if pos != self._pos:
            self._set_position(pos)
            self.position_selected.emit(pos)

    def _set_position(self, pos: int | None, force: bool = False) -> None:
        if pos == self._pos and not force:
            return
        self._pos = pos
        self.table.select_position(pos)
        self.hidden.set_position(pos)
        self.attention.set_position(pos)
        self._request_lens()
        self._update_header()

    def _on_tab_changed(self, _index: int) -> None:
        current = self.tabs.currentWidget()
        if current in self._stale:
            self._stale.discard(current)
            current.refresh(force=True)
        self._request_lens()

    def _request_lens(self) -> None:
        """Ask for the lens at the selected position if the lens tab shows and lacks it."""
        if self.tabs.currentWidget() is not self.lens:
            return
        t, pos = self._trace, self._pos
        if t is None or pos is None:
            self._lens_state = ("none", None)
            self.lens.set_result(None)
            return
        state, at = self._lens_state
        if at == pos and state != "none":
            return  # already shown, on its way, or known to be unavailable
        if t.residual_rows(pos) is None:
            kept = t.started.inspect.get("keep_residuals", True)
            if not kept:
                self._lens_state = ("unavailable", pos)
                self.lens.set_unavailable("The residual stream was not kept for this run, so there is nothing to "
                                          "read through the lens. Turn on “keep residuals” before generating.")
            else:
                self._lens_state = ("unfed", pos)
                self.lens.set_unavailable(f"Position {pos} has not been fed to the model yet (the last generated "
                                          "token never is), so it has no hidden states to read.")
            return
        self._lens_state = ("pending", pos)
        self.lens.set_pending(pos)
        self.lens_requested.emit(pos)

    def _next_piece(self, result: LensResult) -> str | None:
        t = self._trace
        if t is None or result.target_id is None:
            return None
        if t.next_token(result.position) == result.target_id:
            return t.pieces[result.position + 1]
        return self.texts.text(result.target_id)

    def _update_header(self) -> None:
        t, pos = self._trace, self._pos
        self.header.setVisible(t is not None)  # the placeholder page says it all
        if t is None:
            return
        if pos is None or pos >= t.length:
            self.header.setText(f"{t.length} tokens. Pick one in the table to inspect it.")
            return
        part = "prompt" if pos < t.n_prompt else "generated"
        bits = [f"Position {pos} of {t.length}", quote_piece(t.pieces[pos]), part]
        lp = float(t.logprob[pos]) if pos > 0 else 0.0
        if pos > 0 and not np.isfinite(lp):  # a prompt token before PromptScored (or a run stopped first)
            bits.append("not scored yet" if t.finished is None else "not scored")
        elif pos > 0:
            bits.append(f"p {format_prob(float(np.exp(lp)))}")
            bits.append(f"rank {int(t.rank[pos])}")
            bits.append(f"entropy {float(t.entropy[pos]):.2f} nats")
        self.header.setText("  ·  ".join(bits))

    def _update_interventions(self, force: bool = False) -> None:
        t = self._trace
        key = (id(t), len(t.mask_changes)) if t is not None else None
        if key == self._interventions_key and not force:
            return  # refresh() runs per batch of tokens: only a new mask change alters this line
        self._interventions_key = key
        text = interventions_text(t, self.attention.head_mask()) if t is not None else ""
        self.interventions.setText(text)
        self.interventions.setVisible(bool(text))


def interventions_text(trace: RunTrace, edited: tuple[HeadScale, ...]) -> str:
    """"Heads masked: 4:1, 8:*; from position 12: 4:1 · Hidden from attention: positions 2–4" and,
    when the mask being edited differs from the one in force at the run's end, what the next run gets."""
    shape = (trace.n_layers, trace.n_heads)
    started = trace.started
    parts = []
    if started.head_mask or trace.mask_changes:
        start, changes = mask_texts(trace)
        parts.append(f"Heads masked: {start}" + (f"; {changes}" if changes else ""))
    if started.hidden_positions:
        parts.append(f"Hidden from attention: positions {position_ranges(started.hidden_positions)}")
    in_force = trace.mask_changes[-1].head_mask if trace.mask_changes else started.head_mask
    if mask_dict(edited) != mask_dict(in_force):
        parts.append(f"Next run's head mask: {format_head_mask(edited, *shape) or 'none'}")
    return "  ·  ".join(parts)
