"""Logit lens at one position: each layer's residual stream read through the model's output head.

A table with one row per hidden-state row (`emb, 0 … L-1`): the top-5 tokens, each cell
"token  probability" shaded by probability, then the rank and probability of the token that
actually came next; and a plot of that probability layer by layer on a logarithmic axis (typical
values, 1e-4 … 1e-2, would lie flat on zero on a linear one). The view only shows a LensResult it
is handed: the engine computes lenses asynchronously, or the run keeps a table of them.

Token text is untrusted: cells are plain text, tooltips and the plot title are escaped.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QBrush, QFont, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView, QHeaderView, QLabel, QStackedWidget, QTableWidget, QTableWidgetItem,
    QVBoxLayout, QWidget,
)

from ...engine.messages.events import LensResult
from ...engine.messages.rows import row_description, row_name, row_tick
from ..colors import follow_palette, mix
from ..rich_text import plain_tip
from .heatmap import FittedTitle, layer_plot, style_plot
from .splitter import splitter
from .token_table import format_prob, quote_piece

TOP_N = 5
ORDINALS = ("1st", "2nd", "3rd", "4th", "5th")
# The top-N tokens first (what each layer predicts), then where the token that came next stands.
COL_RANK, COL_NEXT_P = TOP_N, TOP_N + 1
HEADERS = ORDINALS[:TOP_N] + ("next\nrank", "next\np")  # narrow: two lines, the tooltip says the rest
NO_RANK = "–"
TITLE_CHARS = 24  # the plot title cuts the token short (the status line above has it whole)
PLOT_MIN_WIDTH = 180
P_FLOOR = 1e-12  # a probability that underflowed to 0 is drawn here on the log axis, not at -inf


def ranks_from_top(result: LensResult) -> np.ndarray:
    """Per row, the next token's 1-based rank when it is among the row's top tokens; 0 when it is not
    (the rank is then only known to exceed the number of tokens kept) or when there is no next token."""
    n_rows = result.top_ids.shape[0]
    ranks = np.zeros(n_rows, np.int64)
    if result.target_id is None:
        return ranks
    for r in range(n_rows):
        hits = np.flatnonzero(np.asarray(result.top_ids[r]) == result.target_id)
        if hits.size:
            ranks[r] = int(hits[0]) + 1
    return ranks


def rank_text(rank: int, n_top: int, has_target: bool) -> str:
    """"1", "4,512", "> 5" (not among the top tokens the live lens keeps) or "–" (no next token)."""
    if not has_target:
        return NO_RANK
    return f"{rank:,}" if rank > 0 else f"> {n_top}"


class LensView(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.result: LensResult | None = None
        self.ranks: np.ndarray | None = None  # (L+1,) rank of the next token per row; 0 = unknown / none
        self.ranks_exact = False  # True when the ranks came with the result (a stored lens table)
        self._target_text = ""

        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.PlainText)  # it quotes the next token

        self.table = QTableWidget(0, len(HEADERS))
        self.table.setHorizontalHeaderLabels(list(HEADERS))
        for c in range(TOP_N):
            self.table.horizontalHeaderItem(c).setToolTip(f"The {ORDINALS[c]} most likely next token "
                                                          "at each layer, with its probability")
        self._set_next_tips("")
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # nothing to select: no focus frame on a cell
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideNone)
        # Every column as wide as its widest cell (the table has at most 49 rows: measuring is cheap);
        # a narrow panel scrolls sideways rather than cutting "' magnitude' 0.003" to "' magnit…".
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(False)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.table.setToolTip("The most likely next tokens when the residual stream after each layer is read "
                              "through the final norm and output head. Bold: the token that actually came next.")

        self.plot, self._x_axis = layer_plot()
        self.plot.setLogMode(x=False, y=True)
        self.plot.setLabel("left", "probability (log scale)")
        self.plot.setMinimumWidth(PLOT_MIN_WIDTH // 2)
        self.title = FittedTitle(self.plot)
        self.curve = self.plot.plot([], [], connect="finite")
        self.points = pg.ScatterPlotItem(size=7, hoverable=True, tip=self._tip)
        self.plot.addItem(self.points)

        split = self.split = splitter(Qt.Orientation.Horizontal, (self.table, 3), (self.plot, 2), sizes=(600, 400))
        # Until the person moves the divider, the table gets the width its columns need (the plot the rest).
        self._split_moved = False
        split.splitterMoved.connect(self._on_split_moved)
        split.installEventFilter(self)

        # Without a result, one centred message instead of an empty table and plot.
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        page = QWidget()
        pl = QVBoxLayout(page)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addWidget(self.status)
        pl.addWidget(split, 1)
        self._result_page = page
        self.pages = QStackedWidget()
        self.pages.addWidget(self.message)
        self.pages.addWidget(page)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.pages)
        self._bold = QFont()
        self._bold.setBold(True)
        follow_palette(self, self._restyle)
        self._apply_palette()
        self.set_result(None)

    # --- states --------------------------------------------------------------------------------

    def set_result(self, result: LensResult | None, target_text: str | None = None, ranks=None) -> None:
        """Show a lens; `target_text` is the next token's text (else the result's own pieces, else #id);
        `ranks` (L+1,) the next token's 1-based rank per row when known (a stored lens table), else the
        ranks are read off the result's top tokens where it is among them."""
        self.result = result
        if result is None:
            self.ranks = None
            self._clear("Select a token to read its hidden states through the output head (logit lens).")
            return
        self.pages.setCurrentWidget(self._result_page)
        self._target_text = target_text or self._find_piece(result, result.target_id)
        n_rows = result.top_ids.shape[0]
        if ranks is not None and len(ranks) == n_rows:
            self.ranks, self.ranks_exact = np.asarray(ranks, np.int64).copy(), True
        else:
            self.ranks, self.ranks_exact = ranks_from_top(result), False
        if result.target_id is None:
            self.status.setText(f"Logit lens at position {result.position}. "
                                "The run ends here: no next token to follow.")
        else:
            self.status.setText(f"Logit lens at position {result.position}: what each layer predicts next. "
                                f"The token that came next, {quote_piece(self._target_text)}, is in bold.")
        self._fill_table(result)
        self._fill_plot(result)
        self._fit_split()

    def set_pending(self, position: int) -> None:
        self._clear(f"Computing the logit lens for position {position}…")

    def set_unavailable(self, reason: str) -> None:
        self._clear(reason)

    def message_text(self) -> str:
        """What the view tells the user now (the status line or the centred message)."""
        return self.status.text() if self.pages.currentWidget() is self._result_page else self.message.text()

    def _clear(self, message: str) -> None:
        self.result = None
        self.ranks = None
        self.message.setText(message)
        self.pages.setCurrentWidget(self.message)
        self.table.setRowCount(0)
        self.curve.setData([], [])
        self.points.setData([], [])
        self.title.set("")

    # --- filling -------------------------------------------------------------------------------

    @staticmethod
    def _find_piece(result: LensResult, token_id: int | None) -> str:
        if token_id is None:
            return ""
        for row_ids, row_pieces in zip(result.top_ids, result.top_pieces):
            for tid, piece in zip(row_ids, row_pieces):
                if int(tid) == token_id:
                    return piece
        return f"#{token_id}"

    def _next_probs(self, result: LensResult) -> np.ndarray:
        return np.exp(np.asarray(result.target_logprob, dtype=np.float64))

    def _fill_table(self, result: LensResult) -> None:
        palette = self.palette()
        base, accent = palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.Highlight)
        text, on_accent = palette.color(QPalette.ColorRole.Text), palette.color(QPalette.ColorRole.HighlightedText)
        n_rows = result.top_ids.shape[0]
        n = min(TOP_N, result.top_ids.shape[1])
        has_target = result.target_id is not None
        next_p = self._next_probs(result)
        ranks = self.ranks if self.ranks is not None else np.zeros(n_rows, np.int64)
        target = quote_piece(self._target_text) if has_target else ""
        self._set_next_tips(target)
        self.table.setRowCount(n_rows)
        for r in range(n_rows):
            head = QTableWidgetItem(row_tick(r))
            head.setToolTip(plain_tip(f"{row_name(r)}: the output of decoder.layers[{r - 1}]" if r
                                      else row_description(r)))
            self.table.setVerticalHeaderItem(r, head)

            rank = int(ranks[r]) if has_target else 0
            p = float(next_p[r]) if has_target else math.nan
            rank_item = QTableWidgetItem(rank_text(rank, result.top_ids.shape[1], has_target))
            p_item = QTableWidgetItem(format_prob(p) if has_target else NO_RANK)
            if not has_target:
                tip = f"{row_name(r)}: the run ends here, no next token."
            elif rank > 0:
                tip = f"{row_name(r)}: the next token {target} is ranked {rank:,}, probability {p:.4g}"
            else:
                tip = (f"{row_name(r)}: the next token {target} is not among this layer's top "
                       f"{result.top_ids.shape[1]} (probability {p:.4g}); its exact rank comes with the "
                       "lens table computed after the run.")
            for item, value in ((rank_item, rank), (p_item, p)):
                item.setData(Qt.ItemDataRole.UserRole, value)
                item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
                item.setToolTip(plain_tip(tip))
            self.table.setItem(r, COL_RANK, rank_item)
            self.table.setItem(r, COL_NEXT_P, p_item)

            for c in range(TOP_N):
                col = c
                if c >= n:
                    self.table.setItem(r, col, QTableWidgetItem(""))
                    continue
                tid, p = int(result.top_ids[r, c]), float(result.top_probs[r, c])
                piece = result.top_pieces[r][c] if c < len(result.top_pieces[r]) else f"#{tid}"
                item = QTableWidgetItem(f"{quote_piece(piece)}  {format_prob(p)}")
                item.setData(Qt.ItemDataRole.UserRole, (tid, p))
                item.setToolTip(plain_tip(f"{row_name(r)}: {quote_piece(piece)} (id {tid}), probability {p:.4g}"))
                # sqrt: small probabilities still show a tint; at most 3/4 of the way: never a selection's colour
                strength = 0.75 * float(np.sqrt(np.clip(p, 0, 1)))
                item.setBackground(QBrush(mix(base, accent, strength)))
                item.setForeground(QBrush(on_accent if strength > 0.5 else text))
                if tid == result.target_id:
                    item.setFont(self._bold)
                self.table.setItem(r, col, item)

    def _set_next_tips(self, target: str) -> None:
        what = f"the token that came next ({target})" if target else "the token that came next"
        self.table.horizontalHeaderItem(COL_RANK).setToolTip(plain_tip(
            f"Rank of {what} in each layer's prediction: 1 = the layer's top choice; "
            f"> {TOP_N}: not among the top {TOP_N} (the exact rank comes with the lens table computed after the run)"))
        self.table.horizontalHeaderItem(COL_NEXT_P).setToolTip(plain_tip(
            f"Probability each layer gives {what}; plotted on the right"))

    def _fill_plot(self, result: LensResult) -> None:
        y = self._next_probs(result)
        x = np.arange(len(y), dtype=np.float64)
        self._x_axis.count = len(y)
        self.plot.setXRange(-0.5, len(y) - 0.5, padding=0.02)
        ok = np.isfinite(y)
        y = np.where(ok, np.maximum(y, P_FLOOR), np.nan)
        self.curve.setData(x, y)  # in log mode: pyqtgraph takes log10 itself
        ranks = self.ranks if self.ranks is not None else np.zeros(len(y), np.int64)
        # A scatter item has no log mode of its own: it is handed log10 values.
        self.points.setData(x[ok], np.log10(y[ok]), data=[int(r) for r in ranks[ok]])
        if ok.any():
            # From 1 down to a decade below the smallest value (at least 1e-2): small values stay readable.
            low = min(math.floor(math.log10(float(np.nanmin(y)))), -2)
            self.plot.setYRange(low, 0, padding=0.04)
        else:
            self.plot.setYRange(-4, 0, padding=0.04)
        if result.target_id is None:
            self.title.set("no next token")
        else:
            shown = self._target_text
            if len(shown) > TITLE_CHARS:
                shown = shown[: TITLE_CHARS - 1] + "…"
            self.title.set(f"p({quote_piece(shown)}) by layer")

    def _tip(self, x: float, y: float, data) -> str:
        result = self.result
        n_top = result.top_ids.shape[1] if result is not None else TOP_N
        p = 10 ** y  # the point's y is log10 p
        return f"{row_name(int(round(x)))}: p = {p:.4g}, rank {rank_text(int(data), n_top, True)}"

    # --- layout -------------------------------------------------------------------------------

    def table_width_needed(self) -> int:
        """The width at which every column of the table shows whole, without a sideways scroll bar."""
        t = self.table
        width = t.verticalHeader().sizeHint().width() + 2 * t.frameWidth()
        width += sum(t.columnWidth(c) for c in range(t.columnCount()))
        rows_height = t.horizontalHeader().sizeHint().height() + t.rowCount() * t.verticalHeader().defaultSectionSize()
        if t.verticalScrollBar().isVisible() or rows_height > t.height() - 2 * t.frameWidth():
            width += t.verticalScrollBar().sizeHint().width()
        return width

    def _fit_split(self) -> None:
        # The splitter's own width, not the sum of its children's: on a resize they follow it only later.
        total = self.split.width() - self.split.handleWidth()
        if self._split_moved or total <= 0 or self.result is None:
            return
        plot_min = max(PLOT_MIN_WIDTH, int(total * 0.25))
        table = max(min(self.table_width_needed(), total - plot_min), int(total * 0.45))
        self.split.setSizes([table, total - table])

    def _on_split_moved(self, _pos: int, _index: int) -> None:
        self._split_moved = True

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        if watched is self.split and event.type() == QEvent.Type.Resize:
            QTimer.singleShot(0, self._fit_split)  # once the splitter has laid its children out
        return False

    # --- palette -------------------------------------------------------------------------------

    def _restyle(self) -> None:
        self._apply_palette()
        if self.result is not None:
            self._fill_table(self.result)

    def _apply_palette(self) -> None:
        palette = self.palette()
        style_plot(self.plot, palette)
        accent = palette.color(QPalette.ColorRole.Highlight)
        self.curve.setPen(pg.mkPen(accent, width=2))
        self.points.setBrush(pg.mkBrush(accent))
        self.points.setPen(pg.mkPen(palette.color(QPalette.ColorRole.Base)))
