"""Attention: a layers × heads grid of one statistic at the selected token, and, when the run kept
full attention rows, the whole attention matrix of one head.

Layers and heads count from 0, as `model.model.decoder.layers[i]` does: the cell in row l, column h
is head h of decoder layer l, named "L{l}H{h}" as in the CLI, the exports and the session files.

The grid also edits the head mask for the next run: right-click a head, a layer number or a head
number for the mask menu, or turn on "Edit head mask" and click. Masked heads are hatched.
"""

from __future__ import annotations

import time
from typing import Iterable

import numpy as np
from PySide6.QtCore import QPointF, Qt, QTimer, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QHBoxLayout, QInputDialog, QLabel, QMenu, QSpinBox, QVBoxLayout, QWidget,
)

from ...engine.messages.settings import HeadScale
from ...session.trace import RunTrace
from ..colors import follow_palette
from .head_mask_editor import (
    Cell, HeadMaskBar, HeadMaskOverlay, MaskDict, head_cell_name, head_label, head_scales, mask_dict,
)
from .heatmap import Axis, Heatmap
from .hidden_view import token_name
from .splitter import splitter
from .stat_box import StatBox

STATS = (("entropy", "entropy (nats)"), ("sink", "sink weight (key 0)"), ("distance", "mean distance (tokens)"))
STAT_TIPS = {
    "entropy": "Entropy of the head's weights over keys 0..t, in nats: low = focused, high = spread out",
    "sink": "Weight the head puts on key 0 (the leading </s>), the 'attention sink'",
    "distance": "Average distance back to the attended keys: Σ w_k (t − k)",
}
NO_ROWS = ("To see a head's full attention matrix beside the grid, turn on “keep full attention rows” "
           "before generating.")
GRID_HINT = "Click a head: its matrix. Right-click: mask it."
GRID_HINT_NO_ROWS = "Hover a head to read it. Right-click: mask it."
GRID_HINT_TIP = ("Hover a head to read its value. Click a head to show its full attention matrix (when the run kept "
                 "full attention rows). Right-click a head, a layer number or a head number to mask heads for "
                 "the next run.")
MATRIX_MIN_INTERVAL_S = 0.25  # building a T × T matrix is O(T²): don't redo it on every token


# What a click on the grid points at: a head (layer, head), a whole layer (row number) or one head
# index in every layer (column number).
Target = tuple[str, int, int]  # ("head", layer, head) | ("layer", layer, -1) | ("index", -1, head)


class AttentionView(QWidget):
    position_selected = Signal(int)
    # (layer, head): a finished run whose full rows stayed with its engine (a server) wants that matrix
    matrix_requested = Signal(int, int)
    head_mask_changed = Signal(object)  # tuple[HeadScale, ...] sorted by (layer, head): the user edited the mask

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._trace: RunTrace | None = None
        self._fetched = self._asked = None  # see set_trace
        self._pos: int | None = None
        self._mask: MaskDict = {}
        self._matrix_key: tuple[int, int, int] | None = None  # (layer, head, T) shown
        self._matrix_time = 0.0
        self._matrix_timer = QTimer(self, singleShot=True)
        self._matrix_timer.timeout.connect(lambda: self._update_matrix(force=True))

        self.stats = StatBox(STATS, STAT_TIPS)
        self.stats.changed.connect(self._on_stat_changed)
        self.mask_bar = HeadMaskBar()
        self.mask_bar.edit_button.toggled.connect(self._on_edit_toggled)
        self.mask_bar.clear_button.clicked.connect(self.clear_head_mask)
        bar = QHBoxLayout()
        bar.addWidget(self.stats)
        bar.addSpacing(16)
        bar.addWidget(self.mask_bar, 1)

        # Left: every head at the selected token.
        self.grid_caption = QLabel()
        self.grid_caption.setWordWrap(True)
        self.grid_caption.setTextFormat(Qt.TextFormat.PlainText)  # it quotes a token
        self.grid = Heatmap(Axis("layer"), Axis("head"), cell_name=head_cell_name, hint=GRID_HINT)
        self.grid.readout.setToolTip(GRID_HINT_TIP)
        self.grid.cell_clicked.connect(self._on_grid_clicked)
        self.grid.plot.scene().sigMouseClicked.connect(self._on_grid_scene_clicked)
        self.mask_overlay = HeadMaskOverlay()
        self.grid.plot.addItem(self.mask_overlay, ignoreBounds=True)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.grid_caption)
        ll.addWidget(self.grid, 1)

        # Right: one head's full matrix, when the run kept full attention rows.
        self.layer_spin = QSpinBox(prefix="layer ", minimum=0, maximum=0)
        self.head_spin = QSpinBox(prefix="head ", minimum=0, maximum=0)
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
        self.right = matrix_panel
        self._matrix_panel = matrix_panel
        # Without full rows the grid takes the whole width and one line says how to get the matrix,
        # instead of a large panel holding only that sentence beside a small grid.
        self.no_rows_label = QLabel(NO_ROWS)
        self.no_rows_label.setWordWrap(True)
        self.no_rows_label.setTextFormat(Qt.TextFormat.PlainText)
        self.no_rows_label.setEnabled(False)  # drawn in the muted text colour: a note, not content

        # Grid and matrix share the width; the divider moves either way.
        split = self.split = splitter(Qt.Orientation.Horizontal, (left, 1), (self.right, 1), sizes=(500, 500))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(split, 1)
        layout.addWidget(self.no_rows_label)
        self._on_stat_changed()
        self._show_mask()
        follow_palette(self, self._apply_palette)
        self._apply_palette()

    # --- inputs --------------------------------------------------------------------------------

    @property
    def showing_matrix(self) -> bool:
        return not self._matrix_panel.isHidden()

    def set_trace(self, trace: RunTrace | None) -> None:
        self._trace = trace
        self._matrix_key = None
        self._fetched = None  # (layer, head, length, matrix) computed by the engine for this run
        self._asked = None  # the (layer, head, length) asked for
        if trace is not None:
            self.layer_spin.setMaximum(trace.n_layers - 1)
            self.head_spin.setMaximum(trace.n_heads - 1)
        name = lambda i: token_name(self._trace, i)  # noqa: E731
        self.matrix.set_axes(Axis("query", name=lambda i: "query " + name(i)),
                             Axis("key", name=lambda i: "key " + name(i)))
        self.mask_bar.show_mask(self._mask, *self._model_shape())  # "3:*" needs the model's head count
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
        self.grid.set_colorbar_label(self.stats.label())
        # Sink weight is a fraction of the attention: a fixed 0..1 scale reads the same at every token.
        self.grid.set_fixed_levels((0.0, 1.0) if self.stats.stat == "sink" else None)
        self._update_grid()

    def _update_grid(self) -> None:
        t, pos = self._trace, self._pos
        if t is None or pos is None or not (0 <= pos < t.length):
            self.grid.clear()
            self._place_overlay()
            self.grid_caption.setText("Select a token to see its attention heads.")
            return
        values = t.attention(self.stats.stat)[:, :, pos]
        self.grid.set_data(values)
        if self.mask_overlay.grid_shape != values.shape:
            self._place_overlay()  # the grid's shape changed (a new model): re-fit the marks
        if np.isnan(values).all():
            self.grid_caption.setText(f"{token_name(t, pos)} was never fed to the model: no attention yet.")
        else:
            self.grid_caption.setText(f"{self.stats.label()} of each head at {token_name(t, pos)}")

    def _on_grid_clicked(self, row: int, col: int) -> None:
        if self.mask_bar.editing:
            self.toggle_heads(self._cells(("head", row, col)))
            return
        self.show_head(row, col)

    def show_head(self, layer: int, head: int) -> None:
        """Pick the head whose full attention matrix is shown."""
        self.layer_spin.setValue(layer)
        self.head_spin.setValue(head)

    # --- head mask -----------------------------------------------------------------------------

    def head_mask(self) -> tuple[HeadScale, ...]:
        """The mask being edited, sorted by (layer, head), 0-based."""
        return head_scales(self._mask)

    def set_head_mask(self, mask: Iterable) -> None:
        """Show `mask` (HeadScale items or (layer, head, scale) tuples) as the one being edited; no signal."""
        self._mask = mask_dict(mask)
        self._show_mask()

    def mask_heads(self, cells: Iterable[Cell], scale: float) -> None:
        """Scale each (layer, head) by `scale` (1 unmasks)."""
        new = dict(self._mask)
        for cell in cells:
            if scale == 1.0:
                new.pop(cell, None)
            else:
                new[cell] = float(scale)
        self._commit(new)

    def unmask_heads(self, cells: Iterable[Cell]) -> None:
        self.mask_heads(cells, 1.0)

    def toggle_heads(self, cells: list[Cell]) -> None:
        """The edit-mode click: unmask when every cell already has the bar's scale, else apply it."""
        scale = self.mask_bar.scale
        if cells and all(self._mask.get(c, 1.0) == scale for c in cells):
            self.unmask_heads(cells)
        else:
            self.mask_heads(cells, scale)

    def clear_head_mask(self) -> None:
        self._commit({})

    def _commit(self, new: MaskDict) -> None:
        if new == self._mask:
            return
        self._mask = new
        self._show_mask()
        self.head_mask_changed.emit(self.head_mask())

    def _show_mask(self) -> None:
        self.mask_bar.show_mask(self._mask, *self._model_shape())
        self._place_overlay()

    def _place_overlay(self) -> None:
        self.mask_overlay.set_cells(self._mask, self.grid.data().shape)

    def _model_shape(self) -> tuple[int | None, int | None]:
        t = self._trace
        return (t.n_layers, t.n_heads) if t is not None else (None, None)

    def _cells(self, target: Target) -> list[Cell]:
        kind, layer, head = target
        n_layers, n_heads = (n or 0 for n in self._model_shape())
        if kind == "layer":
            return [(layer, h) for h in range(n_heads)]
        if kind == "index":
            return [(la, head) for la in range(n_layers)]
        return [(layer, head)]

    def _describe(self, target: Target) -> str:
        kind, layer, head = target
        if kind == "layer":
            return f"layer {layer}"
        if kind == "index":
            return f"head {head} in every layer"
        return f"head {head_label(layer, head)}"

    def target_at(self, scene_pos: QPointF) -> Target | None:
        """The head under a scene point, or the layer / head index whose axis number is under it."""
        cell = self.grid.cell_at(scene_pos)
        if cell is not None:
            return ("head", *cell)
        n_layers, n_heads = self.grid.data().shape
        item = self.grid.plot.getPlotItem()
        p = self.grid.view.mapSceneToView(scene_pos)
        row, col = int(np.floor(p.y() + 0.5)), int(np.floor(p.x() + 0.5))
        if item.getAxis("left").sceneBoundingRect().contains(scene_pos) and 0 <= row < n_layers:
            return ("layer", row, -1)
        if item.getAxis("bottom").sceneBoundingRect().contains(scene_pos) and 0 <= col < n_heads:
            return ("index", -1, col)
        return None

    def mask_menu(self, target: Target) -> QMenu:
        """The right-click menu for a head, a layer or a head index."""
        menu = QMenu(self)
        kind, layer, head = target
        targets = [target]
        if kind == "head":
            targets += [("layer", layer, -1), ("index", -1, head)]
        for t in targets:
            menu.addAction(f"Ablate {self._describe(t)}", lambda t=t: self.mask_heads(self._cells(t), 0.0))
        menu.addSeparator()
        for t in targets:
            menu.addAction(f"Scale {self._describe(t)}…", lambda t=t: self._ask_scale(t))
        menu.addSeparator()
        for t in targets:
            action = menu.addAction(f"Unmask {self._describe(t)}", lambda t=t: self.unmask_heads(self._cells(t)))
            action.setEnabled(any(c in self._mask for c in self._cells(t)))
        menu.addAction("Clear mask", self.clear_head_mask).setEnabled(bool(self._mask))
        return menu

    def _ask_scale(self, target: Target) -> None:
        cells = self._cells(target)
        current = self._mask.get(cells[0], self.mask_bar.scale) if len(cells) == 1 else self.mask_bar.scale
        scale, ok = QInputDialog.getDouble(
            self, "Scale heads", f"Scale the output of {self._describe(target)} by (0 removes it, 1 leaves it):",
            current, 0.0, 2.0, 2)
        if ok:
            self.mask_heads(cells, scale)

    def _on_grid_scene_clicked(self, event) -> None:
        target = self.target_at(event.scenePos())
        if target is None:
            return
        if event.button() == Qt.MouseButton.RightButton:
            event.accept()
            self.mask_menu(target).exec(event.screenPos().toPoint())
        elif event.button() == Qt.MouseButton.LeftButton and self.mask_bar.editing and target[0] != "head":
            self.toggle_heads(self._cells(target))  # head cells come through the heatmap's cell_clicked

    def _on_edit_toggled(self, on: bool) -> None:
        cursor = Qt.CursorShape.PointingHandCursor if on else Qt.CursorShape.ArrowCursor
        self.grid.plot.viewport().setCursor(cursor)

    def _apply_palette(self) -> None:
        palette = self.palette()
        self.mask_overlay.set_colors(palette.color(QPalette.ColorRole.Text), palette.color(QPalette.ColorRole.Base))

    # --- full matrix ---------------------------------------------------------------------------

    def set_fetched_matrix(self, layer: int, head: int, length: int, matrix) -> None:
        """One head's matrix computed where the run's model is (for a run whose rows stayed there)."""
        self._fetched = (layer, head, length, matrix)
        self._matrix_key = None
        self._update_matrix(force=True)

    def _rows_elsewhere(self, t: RunTrace) -> bool:
        """The run's full rows stayed with the engine that made it (a server): one head's is asked for."""
        return not t.has_attention_rows and bool(t.started.inspect.get("rows_on_demand"))

    def _update_matrix(self, force: bool = False) -> None:
        t = self._trace
        if t is not None and self._rows_elsewhere(t):
            self._update_fetched_matrix(t)
            return
        if t is None or not t.has_attention_rows:
            self.grid.set_hint(GRID_HINT_NO_ROWS)
            self._matrix_panel.hide()
            self.no_rows_label.setText(NO_ROWS)
            self.no_rows_label.setVisible(t is not None)
            self.matrix.clear()
            self.matrix.plot.setTitle("")
            self.grid.set_highlight()
            self._matrix_key = None
            return
        self.grid.set_hint(GRID_HINT)
        self._matrix_panel.show()
        self.no_rows_label.hide()
        layer, head = self.matrix_layer_head()
        self.grid.set_highlight(row=layer, col=head)  # which head the matrix shows
        self.matrix.plot.setTitle(f"{head_label(layer, head)}: attention weights")
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

    def _update_fetched_matrix(self, t: RunTrace) -> None:
        self.grid.set_hint(GRID_HINT)
        self._matrix_panel.show()
        self.no_rows_label.hide()
        layer, head = self.matrix_layer_head()
        self.grid.set_highlight(row=layer, col=head)
        key = (layer, head, t.length)
        fetched = self._fetched
        if fetched is not None and fetched[:3] == key:
            if self._matrix_key != key:
                self.matrix.plot.setTitle(f"{head_label(layer, head)}: attention weights")
                self.matrix.set_data(fetched[3])
                self.matrix.set_highlight(row=self._pos)
                self._matrix_key = key
            return
        self.matrix.clear()
        self._matrix_key = None
        if t.finished is None:
            self.matrix.plot.setTitle(f"{head_label(layer, head)}: its weights come from the server once the run ends")
        elif self._asked != key:
            self._asked = key
            self.matrix.plot.setTitle(f"{head_label(layer, head)}: computing its weights where the model is…")
            self.matrix_requested.emit(layer, head)

    def matrix_layer_head(self) -> tuple[int, int]:
        """(layer, head) of the matrix shown: head `head` of `decoder.layers[layer]`."""
        return self.layer_spin.value(), self.head_spin.value()

