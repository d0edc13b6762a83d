"""A run's text as it streams, each token shaded by how unlikely it was; hover for details, click to select.

Every token's characters carry a `QTextCharFormat` whose user property `POSITION` holds the token's
position in the run, so the mouse maps to a token through the document itself. Byte-level BPE can
split one character over several tokens: those that add no text ("") wait until the token that
completes the character arrives, which then carries the character (and, in `GROUP_START`, the
first position of the group).

Interventions start here too. Right-clicking a token offers to fork the run there with one of the
alternatives the model considered (`fork_requested`). With the prompt shown, prompt tokens selected
with the mouse can be hidden from attention in the next run (`hidden_positions_changed`): those are
struck through on a tinted background; the prompt tokens this run hid are struck through.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt, Signal
from PySide6.QtGui import (
    QColor, QContextMenuEvent, QHelpEvent, QMouseEvent, QPalette, QTextCharFormat, QTextCursor, QTextFormat,
)
from PySide6.QtWidgets import QApplication, QMenu, QTextEdit, QToolTip, QWidget

from ...formatting import surprise_opacity
from ...session.trace import RunTrace
from ..colors import follow_palette, mix
from .attribution_view import score_color
from .hiding_actions import add_hiding_actions
from .token_table import add_fork_actions, menu_text
from .token_tooltip import character_rect, token_tooltip

POSITION = QTextFormat.UserProperty + 1  # position of the token these characters belong to
GROUP_START = QTextFormat.UserProperty + 2  # first token of a character split over several tokens

_PROMPT_TEXT_MIX = 0.35  # prompt text is blended this far toward the background: input, not output
_HIDDEN_TINT = 0.3  # tokens to hide next run: background blended this far from Base toward Mid


class OutputView(QTextEdit):
    """Read-only view of one run. Call `refresh()` as the run grows: it appends only what is new."""

    token_clicked = Signal(int)  # position in the run (prompt included)
    fork_requested = Signal(int, int)  # (position, token id): fork the run there with that token
    hidden_positions_changed = Signal(object)  # tuple[int, ...]: prompt positions to hide from attention next run
    explain_requested = Signal(int)  # position: which earlier tokens made this one? (attribution)

    def __init__(self, parent: QWidget | None = None, piece_fn: Callable[[int], str] | None = None):
        super().__init__(parent)
        self._piece_fn = piece_fn
        self._trace: RunTrace | None = None
        self._attribution: tuple[dict[int, float], int | None] = ({}, None)  # scores by position, the target
        self._show_prompt = False
        self._selected: int | None = None
        self._hover: int | None = None
        self._press: QPoint | None = None
        self._hidden: tuple[int, ...] = ()  # prompt positions to hide from attention in the next run
        self._reset_state()
        self.setReadOnly(True)
        self.setUndoRedoEnabled(False)  # an undo stack for streamed text only costs memory
        self.viewport().setMouseTracking(True)  # hover underline and tooltips without a pressed button
        self.setPlaceholderText("Generated text appears here; the less likely a token, the darker its shade.")
        follow_palette(self, self._render_all)  # light/dark switch: the shading comes from the palette

    def _reset_state(self) -> None:
        self._spans: dict[int, tuple[int, int]] = {}  # position -> document range of its characters
        self._carrier: dict[int, int] = {}  # position of a textless token -> the token that carries its text
        self._group: dict[int, int] = {}  # carrying position -> first position of its group
        self._pending: list[int] = []  # textless tokens waiting for the rest of their character
        self._consumed = 0  # generated tokens rendered (or pending) so far
        self._last_part = ""  # the last consumed token's text as drawn (Finished may still extend it)
        self._prompt_shaded = False

    # --- public API -----------------------------------------------------------------------------

    def trace(self) -> RunTrace | None:
        return self._trace

    def set_trace(self, trace: RunTrace | None) -> None:
        self._trace = trace
        self._selected = None
        self._hover = None
        self._render_all()

    def set_show_prompt(self, show: bool) -> None:
        if show != self._show_prompt:
            self._show_prompt = show
            self._render_all()

    def show_prompt(self) -> bool:
        return self._show_prompt

    def refresh(self) -> None:
        """Append the tokens generated since the last call (and shade the prompt once it is scored)."""
        trace = self._trace
        if trace is None:
            return
        if len(trace.text_parts) < self._consumed:  # the trace shrank: not the run we drew
            self._render_all()
            return
        bar = self.verticalScrollBar()
        follow = bar.value() >= bar.maximum() - 4  # keep the newest text in view unless the user scrolled up
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.beginEditBlock()
        if self._show_prompt and not self._prompt_shaded:
            self._reshade_prompt()
        redraw = not self._extend_last(cursor)
        if not redraw:
            self._append_generated(cursor)
        cursor.endEditBlock()
        if redraw:
            self._render_all()
        if follow:
            bar.setValue(bar.maximum())

    def set_selected(self, pos: int | None) -> None:
        """Highlight the token at `pos` (None or a position not shown clears the highlight)."""
        self._selected = pos
        self._update_extra_selections()
        span = self._span_of(pos)
        if span is not None:
            self._scroll_to(span[0])

    def selected(self) -> int | None:
        return self._selected

    def hidden_positions(self) -> tuple[int, ...]:
        """Prompt positions to hide from attention in the next run, sorted."""
        return self._hidden

    def set_hidden_positions(self, positions: Iterable[int]) -> None:
        """Replace the positions to hide (position 0 and negatives are dropped); no signal."""
        self._hidden = tuple(sorted({int(p) for p in positions if int(p) > 0}))
        self._update_extra_selections()

    def prompt_positions_in(self, start: int, end: int) -> list[int]:
        """Shown prompt positions whose characters overlap the document range [start, end)."""
        t = self._trace
        if t is None:
            return []
        out = []
        for pos in range(t.n_prompt):
            span = self._spans.get(pos)
            if span is not None and span[0] < end and start < span[1]:
                out.append(pos)
        return out

    def context_menu(self, point: QPoint) -> QMenu:
        """The right-click menu at a viewport point: copy, fork at the token there, hide prompt tokens."""
        menu = self.createStandardContextMenu()
        t = self._trace
        if t is None:
            return menu
        pos = self.position_at(point)
        if pos is not None:
            add_fork_actions(menu, t, pos, self._piece, self.fork_requested.emit)
            if pos >= 1:
                menu.addSection("Attribution")
                menu.addAction(menu_text(f"Why this token? (which earlier tokens made {t.pieces[pos]!r})"),
                               lambda: self.explain_requested.emit(pos))
        add_hiding_actions(menu, self._hiding_targets(pos), self._hidden, self._change_hidden)
        return menu

    def set_attribution(self, scores: dict[int, float] | None, target: int | None) -> None:
        """Shade each earlier token by its attribution score for the token at `target` (None: none)."""
        self._attribution = (scores or {}, target)
        self._update_extra_selections()

    def _hiding_targets(self, pos: int | None) -> list[int] | None:
        """The prompt positions a right-click at `pos` is about: those selected, else the one at `pos`."""
        if not self._show_prompt:
            return None
        cursor = self.textCursor()
        if cursor.hasSelection():
            return self.prompt_positions_in(cursor.selectionStart(), cursor.selectionEnd())
        return [pos] if pos is not None and pos < self._trace.n_prompt else []

    def _change_hidden(self, add: Iterable[int] = (), remove: Iterable[int] = ()) -> None:
        new = tuple(sorted((set(self._hidden) | {p for p in add if p > 0}) - set(remove)))
        if new != self._hidden:
            self._hidden = new
            self._update_extra_selections()
            self.hidden_positions_changed.emit(new)

    def span(self, pos: int) -> tuple[int, int] | None:
        """Document range [start, end) of the characters showing token `pos`, if they are shown."""
        return self._span_of(pos)

    def position_at(self, point: QPoint) -> int | None:
        """Token position under a viewport point, or None when the point is not on a token's text."""
        doc_point = QPointF(point) + QPointF(self.horizontalScrollBar().value(), self.verticalScrollBar().value())
        index = self.document().documentLayout().hitTest(doc_point, Qt.HitTestAccuracy.ExactHit)
        if index < 0:
            return None
        return self.position_of_character(index)

    def position_of_character(self, index: int) -> int | None:
        """Token position stored in the format of the character at document index `index`."""
        block = self.document().findBlock(index)
        if not block.isValid() or index >= block.position() + block.length() - 1:
            return None  # past the end, or the paragraph separator
        cursor = QTextCursor(self.document())
        cursor.setPosition(index + 1)  # charFormat() is that of the character before the cursor
        value = cursor.charFormat().property(POSITION)
        return int(value) if value is not None else None

    def tooltip_html(self, pos: int) -> str:
        """What hovering token `pos` shows (token_tooltip.py)."""
        if self._trace is None:
            return ""
        return token_tooltip(self._trace, pos, self._piece, self._group.get(pos), pos in self._hidden)

    # --- rendering ------------------------------------------------------------------------------

    def _render_all(self) -> None:
        self._reset_state()
        self.clear()
        trace = self._trace
        if trace is not None:
            cursor = QTextCursor(self.document())
            cursor.beginEditBlock()
            if self._show_prompt:
                for pos in range(trace.n_prompt):
                    self._insert(cursor, trace.pieces[pos], pos, self._prompt_format(pos))
                self._prompt_shaded = self._prompt_scored()
            self._append_generated(cursor)
            cursor.endEditBlock()
        self._update_extra_selections()

    def _append_generated(self, cursor: QTextCursor) -> None:
        trace = self._trace
        assert trace is not None
        parts = trace.text_parts
        for k in range(self._consumed, len(parts)):
            pos = trace.n_prompt + k
            if parts[k] == "":  # part of a character: it shows up with a later token
                self._pending.append(pos)
                continue
            first = self._pending[0] if self._pending else pos
            for p in self._pending:
                self._carrier[p] = pos
            self._pending = []
            fmt = self._token_format(pos, float(np.sum(trace.logprob[first: pos + 1])))
            if first != pos:
                self._group[pos] = first
                fmt.setProperty(GROUP_START, first)
            self._insert(cursor, parts[k], pos, fmt)
        self._consumed = len(parts)
        self._last_part = parts[-1] if parts else ""

    def _extend_last(self, cursor: QTextCursor) -> bool:
        """Catch up with the last token's text if it grew since it was drawn (a character left
        incomplete when the run ended reaches the trace with Finished). False: redraw everything."""
        trace = self._trace
        assert trace is not None
        k = self._consumed - 1
        if k < 0 or trace.text_parts[k] == self._last_part:
            return True
        pos, old, new = trace.n_prompt + k, self._last_part, trace.text_parts[k]
        if self._pending and self._pending[-1] == pos:  # it had no text yet: draw it as a new token
            self._pending.pop()
            self._consumed = k
            return True
        span = self._spans.get(pos)
        if span is None or span[1] != cursor.position() or not new.startswith(old):
            return False
        first = self._group.get(pos, pos)
        fmt = self._token_format(pos, float(np.sum(trace.logprob[first: pos + 1])))
        if first != pos:
            fmt.setProperty(GROUP_START, first)
        cursor.insertText(new[len(old):], fmt)
        self._spans[pos] = (span[0], cursor.position())
        self._last_part = new
        return True

    def _insert(self, cursor: QTextCursor, text: str, pos: int, fmt: QTextCharFormat) -> None:
        start = cursor.position()
        cursor.insertText(text, fmt)
        self._spans[pos] = (start, cursor.position())

    def _token_format(self, pos: int, logprob: float) -> QTextCharFormat:
        fmt = QTextCharFormat()
        fmt.setProperty(POSITION, pos)
        if math.isfinite(logprob):
            shade = QColor(self.palette().color(QPalette.ColorRole.Highlight))
            shade.setAlpha(round(surprise_opacity(logprob) * 255))
            fmt.setBackground(shade)
        return fmt

    def _prompt_format(self, pos: int) -> QTextCharFormat:
        assert self._trace is not None
        fmt = self._token_format(pos, float(self._trace.logprob[pos]))
        pal = self.palette()
        fmt.setForeground(mix(pal.color(QPalette.ColorRole.Text), pal.color(QPalette.ColorRole.Base),
                               _PROMPT_TEXT_MIX))
        return fmt

    def _prompt_scored(self) -> bool:
        t = self._trace
        return t is not None and (t.n_prompt < 2 or bool(np.isfinite(t.logprob[1: t.n_prompt]).any()))

    def _reshade_prompt(self) -> None:
        """The prompt was drawn before PromptScored arrived: give its tokens their shading now."""
        if not self._prompt_scored():
            return
        cursor = QTextCursor(self.document())
        for pos in range(self._trace.n_prompt):
            start, end = self._spans[pos]
            cursor.setPosition(start)
            cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
            cursor.setCharFormat(self._prompt_format(pos))
        self._prompt_shaded = True

    def _piece(self, token_id: int) -> str:
        if self._piece_fn is not None:
            try:
                return self._piece_fn(token_id)
            except Exception:  # a tokenizer hiccup must not break a tooltip
                pass
        return f"#{token_id}"

    # --- selection and hover --------------------------------------------------------------------

    def _span_of(self, pos: int | None) -> tuple[int, int] | None:
        if pos is None:
            return None
        return self._spans.get(self._carrier.get(pos, pos))

    def _update_extra_selections(self) -> None:
        pal = self.palette()
        selections = self._attribution_marks() + self._hidden_marks(pal)
        hover = self._span_of(self._hover)
        if hover is not None and self._hover != self._selected:
            fmt = QTextCharFormat()
            fmt.setUnderlineStyle(QTextCharFormat.UnderlineStyle.SingleUnderline)
            fmt.setUnderlineColor(pal.color(QPalette.ColorRole.Highlight))
            selections.append(self._mark(hover, fmt))
        chosen = self._span_of(self._selected)
        if chosen is not None:
            fmt = QTextCharFormat()
            fmt.setBackground(pal.color(QPalette.ColorRole.Highlight))
            fmt.setForeground(pal.color(QPalette.ColorRole.HighlightedText))
            selections.append(self._mark(chosen, fmt))
        self.setExtraSelections(selections)

    def _attribution_marks(self) -> list[QTextEdit.ExtraSelection]:
        scores, target = self._attribution
        if not scores or self._trace is None:
            return []
        scale = max((abs(v) for v in scores.values() if math.isfinite(v)), default=0.0)
        marks = []
        for pos, score in scores.items():
            span, color = self._spans.get(pos), score_color(score, scale)
            if span is None or color is None:
                continue
            fmt = QTextCharFormat()
            fmt.setBackground(color)
            marks.append(self._mark(span, fmt))
        span = self._spans.get(target) if target is not None else None
        if span is not None:  # the token being explained: boxed
            fmt = QTextCharFormat()
            fmt.setUnderlineStyle(QTextCharFormat.UnderlineStyle.DashUnderline)
            marks.append(self._mark(span, fmt))
        return marks

    def _hidden_marks(self, pal: QPalette) -> list[QTextEdit.ExtraSelection]:
        """Struck-through prompt tokens: those this run hid, and (on a tint) those the next run will hide."""
        t = self._trace
        if t is None or not self._show_prompt:
            return []
        tint = mix(pal.color(QPalette.ColorRole.Base), pal.color(QPalette.ColorRole.Mid), _HIDDEN_TINT)
        marks = []
        for pos in sorted(set(t.started.hidden_positions) | set(self._hidden)):
            span = self._spans.get(pos) if pos < t.n_prompt else None
            if span is None:
                continue
            fmt = QTextCharFormat()
            fmt.setFontStrikeOut(True)
            if pos in self._hidden:
                fmt.setBackground(tint)
            marks.append(self._mark(span, fmt))
        return marks

    def _mark(self, span: tuple[int, int], fmt: QTextCharFormat) -> QTextEdit.ExtraSelection:
        """The characters [start, end) of the document drawn with `fmt` over their own format."""
        sel = QTextEdit.ExtraSelection()
        sel.cursor = QTextCursor(self.document())
        sel.cursor.setPosition(span[0])
        sel.cursor.setPosition(span[1], QTextCursor.MoveMode.KeepAnchor)
        sel.format = fmt
        return sel

    def _scroll_to(self, index: int) -> None:
        cursor = QTextCursor(self.document())
        cursor.setPosition(index)
        rect = self.cursorRect(cursor)
        if rect.top() < 0 or rect.bottom() > self.viewport().height():
            bar = self.verticalScrollBar()
            bar.setValue(bar.value() + rect.center().y() - self.viewport().height() // 2)

    def _set_hover(self, pos: int | None) -> None:
        if pos != self._hover:
            self._hover = pos
            self._update_extra_selections()

    # --- events ---------------------------------------------------------------------------------

    def viewportEvent(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            assert isinstance(event, QHelpEvent)
            pos = self.position_at(event.pos())
            if pos is None:
                QToolTip.hideText()
            else:
                QToolTip.showText(event.globalPos(), self.tooltip_html(pos), self.viewport(),
                                  character_rect(self, event.pos()))
            return True
        if event.type() == QEvent.Type.Leave:
            self._set_hover(None)
        return super().viewportEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        super().mouseMoveEvent(event)
        if not event.buttons():
            self._set_hover(self.position_at(event.position().toPoint()))

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self._press = event.position().toPoint() if event.button() == Qt.MouseButton.LeftButton else None
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        super().mouseReleaseEvent(event)
        point = event.position().toPoint()
        if (event.button() == Qt.MouseButton.LeftButton and self._press is not None
                and (point - self._press).manhattanLength() < QApplication.startDragDistance()):
            pos = self.position_at(point)  # a drag selects text for copying; only a click picks a token
            if pos is not None:
                self.set_selected(pos)
                self.token_clicked.emit(pos)
        self._press = None

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:  # noqa: N802
        self.context_menu(event.pos()).exec(event.globalPos())
