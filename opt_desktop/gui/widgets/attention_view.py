"""Attention: a layers × heads grid of one statistic at the selected token, and, when the run kept
full attention rows, the whole attention matrix of one head.

Layers and heads are numbered from 1 in the UI (layer l is decoder layer l-1 in code, whose output
is the logit lens's "layer l").
"""

from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox, QHBoxLayout, QLabel, QSpinBox, QSplitter, QStackedWidget, QVBoxLayout, QWidget,
)

from ...session.trace import RunTrace
from .heatmap import Axis, Heatmap
from .hidden_view import token_name

STATS = (("entropy", "entropy (nats)"), ("sink", "sink weight (key 0)"), ("distance", "mean distance (tokens)"))
STAT_TIPS = {
    "entropy": "Entropy of the head's weights over keys 0..t, in nats: low = focused, high = spread out",
    "sink": "Weight the head puts on key 0 (the leading </s>), the 'attention sink'",
    "distance": "Average distance back to the attended keys: Σ w_k (t − k)",
}
NO_ROWS = ("Full attention matrices were not kept for this run.\n\n"
           "Turn on “keep full attention rows” before generating to see them here.")
MATRIX_MIN_INTERVAL_S = 0.25  # building a T × T matrix is O(T²): don't redo it on every token


def one_based(i: int) -> str:
    return str(i + 1)


class AttentionView(QWidget):
    position_selected = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._trace: RunTrace | None = None
        self._pos: int | None = None
        self._matrix_key: tuple[int, int, int] | None = None  # (layer, head, T) shown
        self._matrix_time = 0.0
        self._matrix_timer = QTimer(self, singleShot=True)
        self._matrix_timer.timeout.connect(lambda: self._update_matrix(force=True))

        self.stat_box = QComboBox()
        for key, label in STATS:
            self.stat_box.addItem(label, key)
            self.stat_box.setItemData(self.stat_box.count() - 1, STAT_TIPS[key], Qt.ItemDataRole.ToolTipRole)
        self.stat_box.currentIndexChanged.connect(self._on_stat_changed)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Statistic:"))
        bar.addWidget(self.stat_box)
        bar.addStretch(1)

        # Left: every head at the selected token.
        self.grid_caption = QLabel()
        self.grid_caption.setWordWrap(True)
        self.grid = Heatmap(Axis("layer", one_based), Axis("head", one_based),
                            hint="Hover a head to read its value; click it to show its matrix.")
        self.grid.cell_clicked.connect(self._on_grid_clicked)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.grid_caption)
        ll.addWidget(self.grid, 1)

        # Right: one head's full matrix, or why there is none.
        self.layer_spin = QSpinBox(prefix="layer ", minimum=1, maximum=1)
        self.head_spin = QSpinBox(prefix="head ", minimum=1, maximum=1)
        self.layer_spin.valueChanged.connect(lambda _v: self._update_matrix(force=True))
        self.head_spin.valueChanged.connect(lambda _v: self._update_matrix(force=True))
        pick = QHBoxLayout()
        pick.addWidget(QLabel("Attention weights of"))
        pick.addWidget(self.layer_spin)
        pick.addWidget(self.head_spin)
        pick.addStretch(1)
        self.matrix = Heatmap(Axis("query"), Axis("key"),
                              hint="Rows: query tokens, columns: the keys they attend to. Click a row to select it.")
        self.matrix.set_colorbar_label("weight")
        self.matrix.cell_clicked.connect(lambda row, _col: self.position_selected.emit(row))
        matrix_panel = QWidget()
        ml = QVBoxLayout(matrix_panel)
        ml.setContentsMargins(0, 0, 0, 0)
        ml.addLayout(pick)
        ml.addWidget(self.matrix, 1)
        self.no_rows_label = QLabel(NO_ROWS)
        self.no_rows_label.setWordWrap(True)
        self.no_rows_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.right = QStackedWidget()
        self.right.addWidget(self.no_rows_label)
        self.right.addWidget(matrix_panel)
        self._matrix_panel = matrix_panel

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self.right)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(split, 1)
        self._on_stat_changed()

    # --- inputs --------------------------------------------------------------------------------

    @property
    def stat(self) -> str:
        return self.stat_box.currentData()

    def set_stat(self, key: str) -> None:
        self.stat_box.setCurrentIndex(self.stat_box.findData(key))

    @property
    def showing_matrix(self) -> bool:
        return self.right.currentWidget() is self._matrix_panel

    def set_trace(self, trace: RunTrace | None) -> None:
        self._trace = trace
        self._matrix_key = None
        if trace is not None:
            self.layer_spin.setMaximum(trace.n_layers)
            self.head_spin.setMaximum(trace.n_heads)
        name = lambda i: token_name(self._trace, i)  # noqa: E731
        self.matrix.set_axes(Axis("query", name=lambda i: "query " + name(i)),
                             Axis("key", name=lambda i: "key " + name(i)))
        self.refresh()

    def set_position(self, pos: int | None) -> None:
        self._pos = pos
        self._update_grid()
        self.matrix.set_highlight(row=pos)

    def refresh(self, force: bool = False) -> None:
        """Re-read the trace; `force` redraws the matrix now even if it was drawn a moment ago."""
        self._update_grid()
        self._update_matrix(force)

    # --- grid ----------------------------------------------------------------------------------

    def _on_stat_changed(self) -> None:
        self.grid.set_colorbar_label(self.stat_box.currentText())
        self.stat_box.setToolTip(STAT_TIPS[self.stat])
        # Sink weight is a fraction of the attention: a fixed 0..1 scale reads the same at every token.
        self.grid.set_fixed_levels((0.0, 1.0) if self.stat == "sink" else None)
        self._update_grid()

    def _update_grid(self) -> None:
        t, pos = self._trace, self._pos
        if t is None or pos is None or not (0 <= pos < t.length):
            self.grid.clear()
            self.grid_caption.setText("Select a token to see its attention heads.")
            return
        values = t.attention(self.stat)[:, :, pos]
        self.grid.set_data(values)
        if np.isnan(values).all():
            self.grid_caption.setText(f"{token_name(t, pos)} was never fed to the model: no attention yet.")
        else:
            self.grid_caption.setText(f"{self.stat_box.currentText()} of each head at {token_name(t, pos)}")

    def _on_grid_clicked(self, row: int, col: int) -> None:
        self.layer_spin.setValue(row + 1)
        self.head_spin.setValue(col + 1)

    # --- full matrix ---------------------------------------------------------------------------

    def _update_matrix(self, force: bool = False) -> None:
        t = self._trace
        if t is None or not t.has_attention_rows:
            self.right.setCurrentWidget(self.no_rows_label)
            self.no_rows_label.setText(NO_ROWS if t is not None else "No run yet.")
            self.matrix.clear()
            self.grid.set_highlight()
            self._matrix_key = None
            return
        self.right.setCurrentWidget(self._matrix_panel)
        layer, head = self.layer_spin.value() - 1, self.head_spin.value() - 1
        self.grid.set_highlight(row=layer, col=head)  # which head the matrix shows
        key = (layer, head, t.length)
        if key == self._matrix_key:
            return
        wait = MATRIX_MIN_INTERVAL_S - (time.monotonic() - self._matrix_time)
        if not force and self._matrix_key is not None and wait > 0:
            if not self._matrix_timer.isActive():
                self._matrix_timer.start(int(wait * 1000) + 1)  # the last token still gets drawn
            return
        self._matrix_timer.stop()
        self.matrix.set_data(t.attention_matrix(layer, head))
        self.matrix.set_highlight(row=self._pos)
        self._matrix_key = key
        self._matrix_time = time.monotonic()

    def matrix_layer_head(self) -> tuple[int, int]:
        """0-based (layer, head) of the matrix shown."""
        return self.layer_spin.value() - 1, self.head_spin.value() - 1

