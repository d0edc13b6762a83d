"""Per-token table of a run: position, token, id, probability, rank, entropy, top alternatives.

The model reads the RunTrace's arrays directly and only announces new rows (rowsInserted), so a
refresh while the run grows costs nothing for rows already shown. Right-clicking a row (or
double-clicking its alternatives) offers to fork the run there with one of the alternatives.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QItemSelectionModel, QModelIndex, QPoint, Qt, Signal
from PySide6.QtGui import QBrush, QFont, QPalette
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QMenu, QTableView, QVBoxLayout, QWidget

from ...session.trace import RunTrace
from ..colors import follow_palette, mix
from ..rich_text import plain_tip

PieceFn = Callable[[int], str]
N_ALTERNATIVES_SHOWN = 5


def quote_piece(piece: str) -> str:
    """A token's text in quotes with whitespace made visible: ' the', '\\n'."""
    shown = piece.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f"'{shown}'"


def format_prob(p: float) -> str:
    if not np.isfinite(p):
        return "—"
    if p >= 0.001:
        return f"{p:.3f}"
    mantissa, exponent = f"{p:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"  # 2.2e-4, not 2.2e-04: fits the column


def fork_choices(trace: RunTrace | None, pos: int) -> list[tuple[int, float]]:
    """(token id, probability) of the alternatives a run can be forked with at `pos`, most likely first.

    Position 0 (the leading </s>) is never predicted, so it cannot be forked; elsewhere every scored
    alternative other than the token already there qualifies.
    """
    if trace is None or not (1 <= pos < trace.length):
        return []
    chosen = int(trace.token_ids[pos])
    return [(int(tid), float(p)) for tid, p in zip(trace.top_ids[pos], trace.top_probs[pos])
            if np.isfinite(p) and int(tid) != chosen]


def menu_text(text: str) -> str:
    """Text for a QMenu entry: a literal '&' would otherwise mark a keyboard shortcut."""
    return text.replace("&", "&&")


def add_fork_actions(menu: QMenu, trace: RunTrace | None, pos: int, piece: PieceFn,
                     fork: Callable[[int, int], None]) -> None:
    """A section "Fork the run at position P" with one "Fork here with ' x' (p = 12%)" entry per alternative."""
    if trace is None or not (0 <= pos < trace.length):
        return
    choices = fork_choices(trace, pos)
    menu.addSection(menu_text(f"Fork the run at position {pos} ({quote_piece(trace.pieces[pos])})"))
    if not choices:
        why = ("Position 0 (the leading </s>) cannot be forked: nothing predicts it" if pos == 0
               else "No alternatives were recorded at this position")
        menu.addAction(why).setEnabled(False)
        return
    for tid, p in choices:
        label = f"Fork here with {quote_piece(piece(tid))} (p = {format_percent(p)})"
        menu.addAction(menu_text(label), lambda tid=tid: fork(pos, tid))


def format_percent(p: float) -> str:
    """12.3%, 0.0123%, 1.2e-05%; never rounds a probability below 1 up to "100%"."""
    if not np.isfinite(p):
        return "–"
    if p >= 0.9995:
        return "100%" if p >= 1.0 else "99.9%"
    if p >= 1e-4:
        return f"{100 * p:.3g}%"
    return f"{100 * p:.1e}%"


class TokenTexts:
    """Token id → display text: the caller's `piece_fn`, else a piece seen in the run, else '#id'."""

    def __init__(self, piece_fn: PieceFn | None = None):
        self._piece_fn = piece_fn
        self._cache: dict[int, str] = {}
        self._trace: RunTrace | None = None
        self._indexed = 0  # how many of the trace's tokens are in the cache

    def set_trace(self, trace: RunTrace | None) -> None:
        self._trace, self._indexed = trace, 0

    def resolved(self, token_id: int) -> bool:
        """Whether text() has found a real piece for this id (not the '#id' stand-in)."""
        return int(token_id) in self._cache

    def text(self, token_id: int) -> str:
        token_id = int(token_id)
        if token_id in self._cache:
            return self._cache[token_id]
        if self._piece_fn is not None:
            try:
                piece = self._piece_fn(token_id)
            except Exception:  # a bad id or a tokenizer hiccup must not break a view
                piece = None
            if piece is not None:
                self._cache[token_id] = piece
                return piece
        if self._trace is not None and self._indexed < self._trace.length:
            for tid, piece in zip(self._trace.token_ids[self._indexed:], self._trace.pieces[self._indexed:]):
                self._cache.setdefault(int(tid), piece)
            self._indexed = self._trace.length
            if token_id in self._cache:
                return self._cache[token_id]
        return f"#{token_id}"


COLUMNS = ("#", "token", "id", "prob", "rank", "entropy", "top alternatives")
COL_POS, COL_TOKEN, COL_ID, COL_PROB, COL_RANK, COL_ENTROPY, COL_ALTS = range(len(COLUMNS))
HEADER_TIPS = (
    "Position in the sequence (prompt tokens first, starting with </s>)",
    "The token's text; prompt tokens are in italics",
    "Token id in the vocabulary",
    "Probability the model gave this token at its position",
    "Rank of this token in the model's distribution (1 = its top choice)",
    "Entropy of the model's distribution at this position, in nats",
    "The most likely tokens at this position, with probabilities",
)
NUMERIC = {COL_POS, COL_ID, COL_PROB, COL_RANK, COL_ENTROPY}
_DISPLAY, _USER, _FONT = Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.UserRole, Qt.ItemDataRole.FontRole
_BACKGROUND, _ALIGN = Qt.ItemDataRole.BackgroundRole, Qt.ItemDataRole.TextAlignmentRole
_ANSWERED = frozenset({_DISPLAY, _USER, _FONT, _BACKGROUND, _ALIGN, Qt.ItemDataRole.ToolTipRole})
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)


class TokenTableModel(QAbstractTableModel):
    """Rows are positions of a RunTrace. Qt.UserRole gives raw numbers (for tests and sorting)."""

    def __init__(self, texts: TokenTexts, parent=None):
        super().__init__(parent)
        self._texts = texts
        self._trace: RunTrace | None = None
        self._rows = 0
        self._prompt_scored = True
        self._texts_cache: dict[int, tuple[str, ...]] = {}  # position -> its cells' texts, made once
        self._italic = QFont()
        self._italic.setItalic(True)
        self.prompt_brush = QBrush()

    def trace(self) -> RunTrace | None:
        return self._trace

    def set_trace(self, trace: RunTrace | None) -> None:
        self.beginResetModel()
        self._trace = trace
        self._texts_cache.clear()
        self._rows = trace.length if trace is not None else 0
        self._prompt_scored = self._is_prompt_scored()
        self.endResetModel()

    def _is_prompt_scored(self) -> bool:
        t = self._trace
        return t is None or t.n_prompt < 2 or bool(np.isfinite(t.entropy[1]))

    def refresh(self) -> None:
        """Announce positions added to the trace since the last call (and the prompt's scores)."""
        if not self._prompt_scored and self._is_prompt_scored():
            # The prompt rows exist from the Started event; their numbers come with PromptScored.
            self._prompt_scored = True
            self._texts_cache.clear()
            last = min(self._trace.n_prompt, self._rows) - 1
            self.dataChanged.emit(self.index(0, 0), self.index(last, len(COLUMNS) - 1))
        n = self._trace.length if self._trace is not None else 0
        if n > self._rows:
            self.beginInsertRows(QModelIndex(), self._rows, n - 1)
            self._rows = n
            self.endInsertRows()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else self._rows

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal:
            if role == Qt.ItemDataRole.DisplayRole:
                return COLUMNS[section]
            if role == Qt.ItemDataRole.ToolTipRole:
                return HEADER_TIPS[section]
        return None

    def alternatives(self, pos: int, n: int = N_ALTERNATIVES_SHOWN) -> list[tuple[str, float]]:
        assert self._trace is not None
        ids, probs = self._trace.top_ids[pos], self._trace.top_probs[pos]
        return [(self._texts.text(i), float(p)) for i, p in zip(ids[:n], probs[:n]) if np.isfinite(p)]

    def raw(self, pos: int, col: int):
        t = self._trace
        assert t is not None
        if col == COL_POS:
            return pos
        if col == COL_TOKEN:
            return t.pieces[pos]
        if col == COL_ID:
            return int(t.token_ids[pos])
        if col == COL_PROB:
            return float(np.exp(t.logprob[pos]))
        if col == COL_RANK:
            return int(t.rank[pos])
        if col == COL_ENTROPY:
            return float(t.entropy[pos])
        return self.alternatives(pos)

    def _display(self, pos: int, col: int) -> str:
        value = self.raw(pos, col)
        if col == COL_TOKEN:
            return quote_piece(value)
        if col == COL_PROB:
            return format_prob(value)
        if col == COL_RANK:
            return str(value) if value > 0 else "—"  # 0: position 0 has no prediction
        if col == COL_ENTROPY:
            return f"{value:.2f}" if np.isfinite(value) else "—"
        if col == COL_ALTS:
            text = ", ".join(f"{quote_piece(s)} {format_prob(p)}" for s, p in value)
            return text + (", …" if value else "")
        return str(value)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        # Qt asks for seven roles per visible cell on every repaint, which happens with each new row
        # while a run streams: roles nobody answers leave first, and a row's texts are made once.
        if role not in _ANSWERED or self._trace is None:
            return None
        pos = index.row()
        if not (0 <= pos < self._rows):
            return None
        col = index.column()
        if role == _DISPLAY:
            texts = self._texts_cache.get(pos)
            if texts is None:
                texts = tuple(self._display(pos, c) for c in range(len(COLUMNS)))
                if all(self._texts.resolved(i) for i in self._trace.top_ids[pos][:N_ALTERNATIVES_SHOWN]):
                    self._texts_cache[pos] = texts  # else a model loaded later may still name an alternative
            return texts[col]
        if role == _USER:
            return self.raw(pos, col)
        is_prompt = pos < self._trace.n_prompt
        if role == _FONT:
            return self._italic if is_prompt else None
        if role == _BACKGROUND:
            return self.prompt_brush if is_prompt else None
        if role == _ALIGN:
            return _RIGHT if col in NUMERIC else None
        return plain_tip(self._tooltip(pos, col, is_prompt))  # token text is untrusted: never read as HTML

    def _tooltip(self, pos: int, col: int, is_prompt: bool) -> str:
        if col == COL_ALTS:
            alts = self.alternatives(pos, n=len(self._trace.top_ids[pos]))
            if not alts:
                return "no prediction at position 0"
            return ("\n".join(f"{quote_piece(s)}  {format_prob(p)}" for s, p in alts)
                    + "\n\nDouble-click or right-click to fork the run here with one of these.")
        part = "prompt" if is_prompt else "generated"
        return f"position {pos} ({part}): {quote_piece(self._trace.pieces[pos])}, id {self._trace.token_ids[pos]}"


class TokenTable(QWidget):
    """The table view; emits `position_selected` when the user picks a row, `fork_requested` when
    they choose an alternative to fork the run with (context menu, or double-click on the alternatives)."""

    position_selected = Signal(int)
    fork_requested = Signal(int, int)  # (position, token id)

    def __init__(self, texts: TokenTexts, parent: QWidget | None = None):
        super().__init__(parent)
        self._texts = texts
        self.model = TokenTableModel(texts, self)
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setWordWrap(False)
        self.view.verticalHeader().setVisible(False)
        # Fixed row heights and column widths: Qt never measures every row as the run grows.
        vh = self.view.verticalHeader()
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(self.fontMetrics().height() + 6)
        hh = self.view.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setStretchLastSection(True)
        em = self.fontMetrics().horizontalAdvance("M")
        for col, width in ((COL_POS, 4), (COL_TOKEN, 9), (COL_ID, 5), (COL_PROB, 6), (COL_RANK, 5), (COL_ENTROPY, 6)):
            self.view.setColumnWidth(col, width * em)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)
        self._quiet = False  # True while the selection is moved by code, not by the user
        self.view.selectionModel().currentRowChanged.connect(self._on_current_row)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._on_context_menu)
        self.view.doubleClicked.connect(self._on_double_clicked)
        follow_palette(self, self._apply_palette)
        self._apply_palette()

    # --- forks ---------------------------------------------------------------------------------

    def fork_menu(self, pos: int) -> QMenu:
        """The menu offering to fork the run at `pos` with each recorded alternative."""
        menu = QMenu(self)
        add_fork_actions(menu, self.model.trace(), pos, self._texts.text, self.fork_requested.emit)
        return menu

    def _on_context_menu(self, point: QPoint) -> None:
        index = self.view.indexAt(point)
        if index.isValid():
            self.fork_menu(index.row()).exec(self.view.viewport().mapToGlobal(point))

    def _on_double_clicked(self, index: QModelIndex) -> None:
        if index.column() == COL_ALTS:
            rect = self.view.visualRect(index)
            self.fork_menu(index.row()).exec(self.view.viewport().mapToGlobal(rect.bottomLeft()))

    def set_trace(self, trace: RunTrace | None) -> None:
        self.model.set_trace(trace)

    def refresh(self) -> None:
        bar = self.view.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum()
        self.model.refresh()
        if at_bottom and bar.maximum() > 0:
            self.view.scrollToBottom()  # follow the run while the user watches its end

    def select_position(self, pos: int | None) -> None:
        self._quiet = True
        try:
            sm = self.view.selectionModel()
            if pos is None or not (0 <= pos < self.model.rowCount()):
                sm.clearSelection()
                sm.setCurrentIndex(QModelIndex(), QItemSelectionModel.SelectionFlag.NoUpdate)
                return
            index = self.model.index(pos, 0)
            sm.setCurrentIndex(index, QItemSelectionModel.SelectionFlag.ClearAndSelect
                               | QItemSelectionModel.SelectionFlag.Rows)
            self.view.scrollTo(index)
        finally:
            self._quiet = False

    def selected_position(self) -> int | None:
        index = self.view.selectionModel().currentIndex()
        return index.row() if index.isValid() else None

    def _on_current_row(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not self._quiet and current.isValid():
            self.position_selected.emit(current.row())

    def _apply_palette(self) -> None:
        # Prompt rows get a faint tint of the highlight colour: visible in light and dark themes.
        p = self.palette()
        tint = mix(p.color(QPalette.ColorRole.Base), p.color(QPalette.ColorRole.Highlight), 0.12)
        self.model.prompt_brush = QBrush(tint)
        self.view.viewport().update()
