"""Editing a head mask over the attention grid: the mask as plain data, the bar that edits it, and
the overlay that marks masked heads on the layers × heads heatmap.

A mask maps (layer, head) to the factor that head's output is scaled by: 0 ablates it, 1 leaves it
alone (so 1 is never stored). Layers and heads count from 0 everywhere, as `decoder.layers[i]` does:
one head is "L3H0", a mask is written "3:0, 7:* ×0.5" exactly as the CLI's --mask-heads reads it
and the exports and session files record it.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import QDoubleSpinBox, QHBoxLayout, QLabel, QPushButton, QToolButton, QWidget

from ...engine.messages.interventions_spec import format_head_mask
from ...engine.messages.settings import HeadScale

Cell = tuple[int, int]
MaskDict = dict[Cell, float]


# --- the mask as plain data ------------------------------------------------------------------------

def mask_dict(mask: Iterable) -> MaskDict:
    """{(layer, head): scale} from HeadScale items or (layer, head, scale) tuples; scale 1 is dropped."""
    out: MaskDict = {}
    for item in mask:
        if isinstance(item, HeadScale):
            layer, head, scale = item.layer, item.head, item.scale
        else:
            layer, head, scale = item
        if float(scale) != 1.0:
            out[(int(layer), int(head))] = float(scale)
    return out


def head_scales(mask: Mapping[Cell, float]) -> tuple[HeadScale, ...]:
    """The validated, sorted-by-(layer, head) tuple that requests and signals carry."""
    return tuple(HeadScale(layer=layer, head=head, scale=scale) for (layer, head), scale in sorted(mask.items()))


def scale_text(scale: float) -> str:
    """How a cell is labelled: '×0' for an ablated head, '×0.5', '×1.5'."""
    return f"×{scale:.3g}"


def head_label(layer: int, head: int) -> str:
    """'L3H0' for head 0 of `decoder.layers[3]`: the name interpretability tools use."""
    return f"L{layer}H{head}"


def head_cell_name(layer: int, head: int) -> str:
    """How a layers × heads grid names the cell under the mouse: "L3H0 (layer 3, head 0)"."""
    return f"{head_label(layer, head)} (layer {layer}, head {head})"


# --- the bar above the grid --------------------------------------------------------------------------

class HeadMaskBar(QWidget):
    """'Edit head mask' toggle, the scale new selections get, 'Clear mask', and what the mask is now."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.edit_button = QToolButton()
        self.edit_button.setText("Edit head mask")
        self.edit_button.setCheckable(True)
        self.edit_button.setToolTip(
            "While on, a click on a head masks or unmasks it; a click on a layer number does the whole layer, "
            "on a head number that head in every layer. Right-click the grid for the same actions any time.")
        self.scale_spin = QDoubleSpinBox()
        self.scale_spin.setRange(0.0, 2.0)
        self.scale_spin.setSingleStep(0.1)
        self.scale_spin.setDecimals(2)
        self.scale_spin.setPrefix("scale ×")
        self.scale_spin.setSpecialValueText("ablate (×0)")  # shown at the minimum, 0
        self.scale_spin.setToolTip("Factor applied to the output of the heads you mask: 0 removes them, "
                                   "below 1 dampens, above 1 amplifies")
        self.clear_button = QPushButton("Clear mask")
        self.clear_button.setToolTip("Unmask every head")
        self.summary = QLabel()
        self.summary.setTextFormat(Qt.TextFormat.PlainText)
        self.summary.setMinimumWidth(10)  # a long mask must not widen the panel

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit_button)
        layout.addWidget(self.scale_spin)
        layout.addWidget(self.clear_button)
        layout.addWidget(self.summary, 1)

    @property
    def editing(self) -> bool:
        return self.edit_button.isChecked()

    @property
    def scale(self) -> float:
        return float(self.scale_spin.value())

    def show_mask(self, mask: Mapping[Cell, float], n_layers: int | None = None, n_heads: int | None = None) -> None:
        self.clear_button.setEnabled(bool(mask))
        if not mask:
            self.summary.setText("No heads masked.")
            self.summary.setToolTip("")
            return
        listed = format_head_mask(head_scales(mask), n_layers, n_heads)
        n = len(mask)
        self.summary.setText(f"{n} head{'s' if n != 1 else ''} masked: {listed}")
        self.summary.setToolTip(f"Heads scaled in the next run (layer:head counted from 0 as in decoder.layers[i], "
                                f"* = all; no factor = ablated): {listed}")


# --- the marks on the grid ---------------------------------------------------------------------------

class GridOverlay(pg.GraphicsObject):
    """An item over a layers × heads heatmap covering its cells (`_shape`: rows, columns); the mask's
    hatching and the role letters both paint on it."""

    def __init__(self):
        super().__init__()
        self._shape = (0, 0)

    def boundingRect(self) -> QRectF:  # noqa: N802 (Qt's name)
        n_rows, n_cols = self._shape
        return QRectF(-0.5, -0.5, max(n_cols, 0), max(n_rows, 0))


class HeadMaskOverlay(GridOverlay):
    """Hatched, outlined cells with their scale written in, over a layers × heads heatmap.

    Drawn in device pixels (the transform is reset in paint) so the hatching, outlines and text keep
    their size at any zoom. One item paints every masked cell: cheap for a whole masked layer.
    """

    def __init__(self):
        super().__init__()
        self._cells: MaskDict = {}
        self._line = QColor(Qt.GlobalColor.black)
        self._halo = QColor(Qt.GlobalColor.white)
        self.setZValue(5)  # over the image, under the heatmap's selection outline

    def set_cells(self, mask: Mapping[Cell, float], shape: tuple[int, int]) -> None:
        """Mark the cells of `mask` that fall inside a grid of `shape` = (layers, heads)."""
        n_rows, n_cols = shape
        self.prepareGeometryChange()
        self._shape = (n_rows, n_cols)
        self._cells = {(r, c): s for (r, c), s in mask.items() if 0 <= r < n_rows and 0 <= c < n_cols}
        self.update()

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self._shape

    def cells(self) -> MaskDict:
        """The cells marked now, {(layer, head): scale}."""
        return dict(self._cells)

    def set_colors(self, line: QColor, halo: QColor) -> None:
        self._line, self._halo = QColor(line), QColor(halo)
        self.update()

    def paint(self, painter: QPainter, option, widget=None) -> None:
        if not self._cells:
            return
        to_device = painter.transform()
        painter.save()
        painter.resetTransform()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        hatch = QBrush(self._line, Qt.BrushStyle.BDiagPattern)
        halo_pen, line_pen = QPen(self._halo, 3), QPen(self._line, 1)
        font = QFont(painter.font())
        font.setPointSizeF(max(font.pointSizeF() * 0.85, 6.0))  # the scale must fit small cells
        painter.setFont(font)
        metrics = QFontMetrics(font)
        for (row, col), scale in self._cells.items():
            rect = to_device.mapRect(QRectF(col - 0.5, row - 0.5, 1.0, 1.0)).adjusted(1, 1, -1, -1)
            painter.fillRect(rect, hatch)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(halo_pen)
            painter.drawRect(rect)
            painter.setPen(line_pen)
            painter.drawRect(rect)
            text = scale_text(scale)
            box = metrics.boundingRect(text).adjusted(-1, 0, 1, 0)
            if box.width() <= rect.width() - 2 and box.height() <= rect.height() - 2:
                box.moveCenter(rect.center().toPoint())
                painter.fillRect(box, self._halo)
                painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()
