"""A reusable heatmap: pyqtgraph ImageItem + ColorBarItem, labelled axes, hover read-out, clicks.

Rows run top to bottom (matrix convention), columns left to right. Cell (r, c) is centred on the
view coordinate (c, r), so integer tick values land on cell centres. NaN cells are transparent and
show the plot background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QFont, QFontMetrics, QPalette, QPen
from PySide6.QtWidgets import QGraphicsRectItem, QLabel, QVBoxLayout, QWidget

from ...engine.messages.rows import row_tick
from ..colors import follow_palette
from ..rich_text import html_text

COLORMAP = "viridis"


def style_plot(plot: pg.PlotWidget, palette: QPalette) -> None:
    """Take the plot's background and axis colours from the Qt palette (light or dark)."""
    plot.setBackground(palette.color(QPalette.ColorRole.Base))
    fg = palette.color(QPalette.ColorRole.Text)
    item = plot.getPlotItem()
    for name in ("left", "bottom", "right", "top"):
        axis = item.getAxis(name)
        axis.setPen(pg.mkPen(fg))
        axis.setTextPen(pg.mkPen(fg))
        axis.enableAutoSIPrefix(False)  # "(x0.001)" scaling confuses more than it helps here
    item.titleLabel.setAttr("color", fg.name())
    item.titleLabel.setText(item.titleLabel.text)  # re-render in the new colour


class FittedTitle(QObject):
    """A plot's title that shows its text literally (pyqtgraph renders titles as HTML) and is cut short
    with "…" to the plot widget's width, again on every resize: a long token must not run past the plot.

    pyqtgraph gives a title label a minimum width equal to its text, and the plot item grows to fit it,
    past the widget's edge: so the width to fit is the widget's, never the plot item's.
    """

    MARGIN = 8  # pixels left free at the title's ends

    def __init__(self, plot: pg.PlotWidget):
        super().__init__(plot)
        self._plot = plot
        self._item = plot.getPlotItem()
        self.text = ""
        plot.installEventFilter(self)

    def set(self, text: str) -> None:
        self.text = text
        self._fit()

    def shown(self) -> str:
        """The title as drawn (possibly cut short)."""
        return self._item.titleLabel.item.document().toPlainText()

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Resize:
            self._fit()
        return False

    def _fits(self, text: str, width: float) -> bool:
        self._item.setTitle(html_text(text))  # setTitle, not the label's setText: it also shows the title row
        return self._item.titleLabel.item.boundingRect().width() <= width

    def _fit(self) -> None:
        text = self.text
        # The title sits over the plot's middle column: leave the axes' columns beside it.
        beside = self._item.width() - self._item.titleLabel.width()
        width = self._plot.width() - beside - 2 * self.MARGIN
        if self._fits(text, width) or not text or width <= 0:
            return
        lo, hi = 0, len(text)  # the longest prefix that fits with "…" after it
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._fits(text[:mid] + "…", width):
                lo = mid
            else:
                hi = mid - 1
        self._fits(text[:lo] + "…", width)


@dataclass
class Axis:
    """How one heatmap axis is labelled: `tick(i)` on the axis, `name(i)` in the hover read-out."""

    title: str
    tick: Callable[[int], str] = str
    name: Callable[[int], str] | None = None
    first_apart: bool = False  # index 0 is not one of the others (hidden-state rows: emb, then layers)

    def describe(self, i: int) -> str:
        return self.name(i) if self.name else f"{self.title} {self.tick(i)}"


class IndexAxis(pg.AxisItem):
    """An axis over integer indices 0..n-1 that labels ticks through a function.

    Every index is labelled when there is room; else every 2nd, 5th, 10th, 20th … index, the
    smallest step whose labels cannot touch (pyqtgraph's own choice lets "emb" run into "0"). With
    `first_apart`, index 0's wider label ("emb") does not thin out the others.
    """

    STEPS = (1, 2, 5)  # times powers of ten

    def __init__(self, orientation: str, **kwargs):
        super().__init__(orientation, **kwargs)
        self.enableAutoSIPrefix(False)  # indices, not quantities: never "(x0.001)"
        if orientation in ("bottom", "top"):
            # The first label ("emb", centred on the first index) may reach a few pixels past the axis's
            # end; pyqtgraph would drop it. The labels themselves never touch (tickValues sees to that).
            self.setStyle(hideOverlappingLabels=15)
        self.count = 0
        self.label_fn: Callable[[int], str] = str
        # Hidden-state rows are `emb, 0 … L-1`: index 0 stands apart, and the steps count from index 1,
        # so the ticks read "emb, 0, 2, 4" (or "emb, 2, 4" where "0" has no room) rather than "emb, 1, 3".
        self.first_apart = False

    def tickValues(self, minVal, maxVal, size):  # noqa: N802 (pyqtgraph's name)
        lo, hi = max(0, math.ceil(min(minVal, maxVal))), min(self.count - 1, math.floor(max(minVal, maxVal)))
        span = abs(maxVal - minVal)
        if not self.count or hi < lo or span <= 0 or size <= 0:
            return []
        per_index = size / span  # pixels between neighbouring indices
        if not self.first_apart:
            step = self._step(per_index, self._room(0, self.count - 1))
            first = math.ceil(lo / step) * step
            return [(step, list(range(first, hi + 1, step)))]
        # Index 0 ("emb") stands apart: the others step by the room their own labels need, counted from
        # index 1 (labels 0, step, 2·step …), and one too close to index 0 for both labels is left out.
        step = self._step(per_index, self._room(1, self.count - 1))
        values = [v for v in range(1, hi + 1, step) if v >= lo]
        if lo == 0:
            first, gap = self.label_fn(0), self._extent(" ")  # "emb 0": apart, though closer than numbers
            values = [0] + [v for v in values
                            if v * per_index >= (self._extent(first) + self._extent(self.label_fn(v))) / 2 + gap]
        return [(step, values)]

    def _step(self, per_index: float, need: float) -> int:
        """The smallest of 1, 2, 5, 10, 20 … indices that leaves `need` pixels between labels."""
        step, scale = 1, 1
        while step * per_index < need and step < self.count:
            for s in self.STEPS:
                if s * scale * per_index >= need:
                    step = s * scale
                    break
            else:
                scale *= 10
                step = scale
        return step

    def _extent(self, text: str) -> float:
        """Pixels a label takes along the axis: its width across, one line of text up and down."""
        metrics = QFontMetrics(self.style.get("tickFont") or QFont())
        if self.orientation in ("left", "right"):
            return metrics.height() + 2 if text.strip() else 0
        return metrics.horizontalAdvance(text)

    def _room(self, first: int, last: int) -> float:
        """Pixels one index needs for its own label, judged by the first and last labels ("0", "11")."""
        if self.orientation in ("left", "right"):
            return self._extent("0")
        samples = [self.label_fn(first), self.label_fn(last)] if last >= first else ["00"]
        return max(self._extent(t) for t in samples) + self._extent("  ")

    def tickStrings(self, values, scale, spacing):  # noqa: N802
        return [self.label_fn(int(round(v))) for v in values]


def layer_plot() -> tuple[pg.PlotWidget, IndexAxis]:
    """A plot of one value per hidden-state row (`emb, 0 … L-1` along the bottom), with its x axis:
    fixed (no panning or zooming), no context menu, a light horizontal grid."""
    axis = IndexAxis("bottom")
    axis.label_fn = row_tick
    axis.first_apart = True
    plot = pg.PlotWidget(axisItems={"bottom": axis})
    plot.getPlotItem().setMenuEnabled(False)
    plot.setMouseEnabled(x=False, y=False)
    plot.setLabel("bottom", "layer")
    plot.showGrid(x=False, y=True, alpha=0.3)
    return plot, axis


def format_value(v: float) -> str:
    return "no value" if not np.isfinite(v) else f"{v:.4g}"


class Heatmap(QWidget):
    """A rows × columns heatmap with a colour bar, a hover read-out and clickable cells."""

    cell_clicked = Signal(int, int)  # (row, col)

    def __init__(self, rows: Axis | None = None, cols: Axis | None = None, *,
                 colormap: str = COLORMAP, robust: bool = False,
                 value_format: Callable[[float], str] = format_value,
                 cell_name: Callable[[int, int], str] | None = None,
                 hint: str = "Hover a cell to read its value; click to select.",
                 parent: QWidget | None = None):
        super().__init__(parent)
        self._rows_axis = rows or Axis("row")
        self._cols_axis = cols or Axis("column")
        self._robust = robust  # colour limits from the 1st..99th percentile: one outlier won't wash out the rest
        self._fixed_levels: tuple[float, float] | None = None
        self._value_format = value_format
        self._cell_name = cell_name  # names a cell as a whole (e.g. a head, "L3H0"), instead of row, column
        self._hint = hint
        self._data = np.zeros((0, 0), np.float32)
        self._highlight: tuple[int | None, int | None] = (None, None)

        self._left = IndexAxis("left")
        self._bottom = IndexAxis("bottom")
        self.plot = pg.PlotWidget(axisItems={"left": self._left, "bottom": self._bottom})
        item = self.plot.getPlotItem()
        item.setMenuEnabled(False)
        self.view: pg.ViewBox = item.getViewBox()
        self.view.invertY(True)
        self.view.setDefaultPadding(0.0)

        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image_item)
        self.colorbar = pg.ColorBarItem(colorMap=colormap, interactive=False, width=14, colorMapMenu=False)
        self.colorbar.setImageItem(self.image_item, insert_in=item)
        # pyqtgraph fixes the colour bar's value axis at 45 pixels and hides labels that do not fit
        # ("1.3856" does not): let it take the width its labels need.
        self.colorbar.axis.setWidth(None)

        # Two outlines, text colour under base colour: visible on every colour of the map.
        self._markers = (QGraphicsRectItem(), QGraphicsRectItem())
        for z, marker in enumerate(self._markers):
            marker.setZValue(10 + z)
            marker.setVisible(False)
            self.plot.addItem(marker)

        self.readout = QLabel(hint)
        self.readout.setTextFormat(Qt.TextFormat.PlainText)  # cell names quote token text
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.readout.setMinimumWidth(10)  # long token texts must not widen the whole panel
        self.readout.setWordWrap(True)  # a narrow panel wraps the hint rather than cutting it off

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.readout)

        scene = self.plot.scene()
        scene.sigMouseMoved.connect(self._on_mouse_moved)
        scene.sigMouseClicked.connect(self._on_mouse_clicked)
        self.set_axes(self._rows_axis, self._cols_axis)
        follow_palette(self, self._apply_palette)
        self._apply_palette()

    # --- configuration -------------------------------------------------------------------------

    def set_axes(self, rows: Axis, cols: Axis) -> None:
        self._rows_axis, self._cols_axis = rows, cols
        self._left.label_fn, self._bottom.label_fn = rows.tick, cols.tick
        self._left.first_apart, self._bottom.first_apart = rows.first_apart, cols.first_apart
        self.plot.setLabel("left", rows.title)
        self.plot.setLabel("bottom", cols.title)
        self._left.picture = None  # pyqtgraph caches the drawn ticks
        self._bottom.picture = None
        self._left.update()
        self._bottom.update()

    def set_fixed_levels(self, levels: tuple[float, float] | None) -> None:
        """Pin the colour range (e.g. (0, 1) for weights); None = follow the data."""
        self._fixed_levels = levels
        self._update_levels()

    def set_colormap(self, name: str) -> None:
        """Colour the map with another of pyqtgraph's colour maps ("viridis", "CET-D1" …)."""
        self.colorbar.setColorMap(pg.colormap.get(name))

    def set_hint(self, hint: str) -> None:
        """What the read-out says while no cell is under the mouse."""
        if self.readout.text() == self._hint:
            self.readout.setText(hint)
        self._hint = hint

    def set_colorbar_label(self, text: str) -> None:
        self.colorbar.getAxis("left").setLabel(text)

    # --- data ----------------------------------------------------------------------------------

    def set_data(self, values: np.ndarray) -> None:
        """Show a 2-D array, rows × columns. NaN cells stay blank."""
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != 2:
            raise ValueError(f"a heatmap needs a 2-D array, got shape {values.shape}")
        shape_changed = values.shape != self._data.shape
        self._data = values
        n_rows, n_cols = values.shape
        self._left.count, self._bottom.count = n_rows, n_cols
        if values.size == 0:
            self.image_item.clear()
        else:
            self.image_item.setImage(values, autoLevels=False)
            if shape_changed:
                self.image_item.setRect(QRectF(-0.5, -0.5, n_cols, n_rows))
        if shape_changed:
            # The view keeps auto-ranging to the data until the user zooms (the "A" button resets it).
            self.view.setLimits(xMin=-0.5, xMax=max(n_cols, 1) - 0.5, yMin=-0.5, yMax=max(n_rows, 1) - 0.5)
            self._place_marker()
        self._update_levels()

    def data(self) -> np.ndarray:
        """The array shown now (rows × columns)."""
        return self._data

    def clear(self) -> None:
        self.set_data(np.zeros((0, 0), np.float32))
        self.readout.setText(self._hint)

    def _update_levels(self) -> None:
        if self._fixed_levels is not None:
            lo, hi = self._fixed_levels
        else:
            finite = self._data[np.isfinite(self._data)]
            if finite.size == 0:
                lo, hi = 0.0, 1.0
            elif self._robust and finite.size > 20:
                lo, hi = (float(x) for x in np.percentile(finite, (1, 99)))
            else:
                lo, hi = float(finite.min()), float(finite.max())
            if hi <= lo:  # a constant image still needs a non-empty range
                pad = abs(lo) * 0.01 or 0.5
                lo, hi = lo - pad, hi + pad
        self.colorbar.setLevels((lo, hi))

    # --- highlight -----------------------------------------------------------------------------

    def set_highlight(self, row: int | None = None, col: int | None = None) -> None:
        """Outline a column (row=None), a row (col=None), a cell (both) or nothing (neither)."""
        self._highlight = (row, col)
        self._place_marker()

    def _place_marker(self) -> None:
        row, col = self._highlight
        n_rows, n_cols = self._data.shape
        visible = not (row is None and col is None) and self._data.size > 0
        if visible:
            x, w = (col - 0.5, 1.0) if col is not None else (-0.5, float(n_cols))
            y, h = (row - 0.5, 1.0) if row is not None else (-0.5, float(n_rows))
            for marker in self._markers:
                marker.setRect(QRectF(x, y, w, h))
        for marker in self._markers:
            marker.setVisible(visible)

    # --- mouse ---------------------------------------------------------------------------------

    def cell_at(self, scene_pos: QPointF) -> tuple[int, int] | None:
        if not self.view.sceneBoundingRect().contains(scene_pos):
            return None
        p = self.view.mapSceneToView(scene_pos)
        col, row = int(math.floor(p.x() + 0.5)), int(math.floor(p.y() + 0.5))
        n_rows, n_cols = self._data.shape
        if 0 <= row < n_rows and 0 <= col < n_cols:
            return row, col
        return None

    def describe(self, row: int, col: int) -> str:
        """The read-out for one cell, e.g. "layer 3, token 12 ' the': 4.21" or "L3H0 (layer 3, head 0): 0.42"."""
        value = self._value_format(float(self._data[row, col]))
        if self._cell_name is not None:
            return f"{self._cell_name(row, col)}: {value}"
        return f"{self._rows_axis.describe(row)}, {self._cols_axis.describe(col)}: {value}"

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        cell = self.cell_at(scene_pos)
        self.readout.setText(self.describe(*cell) if cell else self._hint)

    def _on_mouse_clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        cell = self.cell_at(event.scenePos())
        if cell:
            self.cell_clicked.emit(*cell)

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.readout.setText(self._hint)
        super().leaveEvent(event)

    # --- palette -------------------------------------------------------------------------------

    def _apply_palette(self) -> None:
        palette = self.palette()
        style_plot(self.plot, palette)
        fg = palette.color(QPalette.ColorRole.Text)
        for name in ("left", "right", "top", "bottom"):
            axis = self.colorbar.getAxis(name)
            axis.setPen(pg.mkPen(fg))
            axis.setTextPen(pg.mkPen(fg))
        for marker, role, width in zip(self._markers, (QPalette.ColorRole.Text, QPalette.ColorRole.Base), (3, 1)):
            pen = QPen(palette.color(role), width)
            pen.setCosmetic(True)  # the same width in pixels whatever the zoom
            marker.setPen(pen)
