"""Logit lens at one position: each layer's residual stream read through the model's output head.

A table of layers × top-5 tokens shaded by probability, and a plot of the probability of the
token that actually came next, layer by layer. The view only shows a LensResult it is handed:
the engine computes lenses asynchronously.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QFont, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView, QHeaderView, QLabel, QSplitter, QStackedWidget, QTableWidget, QTableWidgetItem,
    QVBoxLayout, QWidget,
)

from ...engine.events import LensResult
from ..colors import follow_palette, mix
from .heatmap import IndexAxis, style_plot
from .hidden_view import layer_name, layer_tick
from .token_table import format_prob, quote_piece

TOP_N = 5
ORDINALS = ("1st", "2nd", "3rd", "4th", "5th")


class LensView(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.result: LensResult | None = None
        self._target_text = ""

        self.status = QLabel()
        self.status.setWordWrap(True)

        self.table = QTableWidget(0, TOP_N)
        self.table.setHorizontalHeaderLabels(list(ORDINALS[:TOP_N]))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setWordWrap(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.table.setToolTip("The most likely next tokens when the residual stream after each layer is read "
                          "through the final norm and output head. Bold: the token that actually came next.")

        self._x_axis = IndexAxis("bottom")
        self._x_axis.label_fn = layer_tick
        self.plot = pg.PlotWidget(axisItems={"bottom": self._x_axis})
        self.plot.getPlotItem().setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setLabel("bottom", "layer")
        self.plot.setLabel("left", "probability")
        self.plot.setYRange(0, 1, padding=0.02)
        self.plot.showGrid(x=False, y=True, alpha=0.3)
        self.curve = self.plot.plot([], [], connect="finite", symbol="o", symbolSize=6)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(self.plot)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([600, 400])  # the table's five token columns need the room
        split.setChildrenCollapsible(False)

        # Without a result, one centred message instead of an empty table and plot.
        self.message = QLabel()
        self.message.setWordWrap(True)
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

    def set_result(self, result: LensResult | None, target_text: str | None = None) -> None:
        """Show a lens; `target_text` is the next token's text (else the result's own pieces, else #id)."""
        self.result = result
        if result is None:
            self._clear("Select a token to read its hidden states through the output head (logit lens).")
            return
        self.pages.setCurrentWidget(self._result_page)
        self._target_text = target_text or self._find_piece(result, result.target_id)
        if result.target_id is None:
            self.status.setText(f"Logit lens at position {result.position}. "
                                "The run ends here: no next token to follow.")
        else:
            self.status.setText(f"Logit lens at position {result.position}: what each layer predicts next. "
                                f"The token that came next, {quote_piece(self._target_text)}, is in bold.")
        self._fill_table(result)
        self._fill_plot(result)

    def set_pending(self, position: int) -> None:
        self._clear(f"Computing the logit lens for position {position}…")

    def set_unavailable(self, reason: str) -> None:
        self._clear(reason)

    def message_text(self) -> str:
        """What the view tells the user now (the status line or the centred message)."""
        return self.status.text() if self.pages.currentWidget() is self._result_page else self.message.text()

    def _clear(self, message: str) -> None:
        self.result = None
        self.message.setText(message)
        self.pages.setCurrentWidget(self.message)
        self.table.setRowCount(0)
        self.curve.setData([], [])
        self.plot.setTitle("")

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

    def _fill_table(self, result: LensResult) -> None:
        palette = self.palette()
        base, accent = palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.Highlight)
        text, on_accent = palette.color(QPalette.ColorRole.Text), palette.color(QPalette.ColorRole.HighlightedText)
        n_rows = result.top_ids.shape[0]
        n = min(TOP_N, result.top_ids.shape[1])
        self.table.setRowCount(n_rows)
        self.table.setVerticalHeaderLabels([layer_name(r) for r in range(n_rows)])
        for r in range(n_rows):
            for c in range(TOP_N):
                if c >= n:
                    self.table.setItem(r, c, QTableWidgetItem(""))
                    continue
                tid, p = int(result.top_ids[r, c]), float(result.top_probs[r, c])
                piece = result.top_pieces[r][c] if c < len(result.top_pieces[r]) else f"#{tid}"
                item = QTableWidgetItem(f"{quote_piece(piece)}  {format_prob(p)}")
                item.setData(Qt.ItemDataRole.UserRole, (tid, p))
                item.setToolTip(f"{layer_name(r)}: {quote_piece(piece)} (id {tid}), probability {p:.4f}")
                strength = float(np.sqrt(np.clip(p, 0, 1)))  # sqrt: small probabilities still show a tint
                item.setBackground(QBrush(mix(base, accent, strength)))
                item.setForeground(QBrush(on_accent if strength > 0.6 else text))
                if tid == result.target_id:
                    item.setFont(self._bold)
                self.table.setItem(r, c, item)

    def _fill_plot(self, result: LensResult) -> None:
        y = np.exp(np.asarray(result.target_logprob, dtype=np.float64))
        x = np.arange(len(y), dtype=np.float64)
        self._x_axis.count = len(y)
        self.curve.setData(x, y)
        if result.target_id is None:
            self.plot.setTitle("no next token")
        else:
            self.plot.setTitle(f"p({quote_piece(self._target_text)}) by layer")

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
        self.curve.setSymbolBrush(pg.mkBrush(accent))
        self.curve.setSymbolPen(pg.mkPen(palette.color(QPalette.ColorRole.Base)))
