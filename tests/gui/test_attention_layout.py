"""The attention grid uses the space it is given: its cells grow with the widget, it is not left small
beside an empty panel, every layer and head is numbered when there is room, and the hint is never cut."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF

from fakes import fake_trace
from opt_desktop.gui.widgets.attention_view import AttentionView

LAYERS = HEADS = 12  # opt-125m


def cell_size(view: AttentionView) -> tuple[float, float]:
    vb = view.grid.view
    a, b = vb.mapViewToScene(QPointF(0, 0)), vb.mapViewToScene(QPointF(1, 1))
    return abs(b.x() - a.x()), abs(b.y() - a.y())


def shown(qtbot, keep_rows: bool, size=(700, 420)) -> AttentionView:
    v = AttentionView()
    qtbot.addWidget(v)
    v.resize(*size)
    v.set_trace(fake_trace(n_prompt=6, n_gen=4, n_layers=LAYERS, n_heads=HEADS, keep_rows=keep_rows))
    v.set_position(5)
    v.show()
    qtbot.waitExposed(v)
    qtbot.waitUntil(lambda: v.grid.view.viewRange()[0][1] >= HEADS - 0.5)
    return v


def test_grid_cells_grow_with_the_widget(qtbot):
    v = shown(qtbot, keep_rows=False)
    small = cell_size(v)
    v.resize(1400, 840)
    qtbot.waitUntil(lambda: cell_size(v)[0] > small[0] * 1.6 and cell_size(v)[1] > small[1] * 1.6)


@pytest.mark.parametrize("keep_rows", [False, True])
def test_grid_is_not_small_beside_an_empty_panel(qtbot, keep_rows):
    v = shown(qtbot, keep_rows, size=(1200, 600))
    grid_width = v.grid.view.sceneBoundingRect().width()
    if keep_rows:  # grid and one head's matrix share the width, and either can be widened
        assert v.showing_matrix
        matrix_width = v.matrix.view.sceneBoundingRect().width()
        assert 0.6 < grid_width / matrix_width < 1.6
        assert not v.split.childrenCollapsible()
    else:  # no matrix to show: the grid takes the width, one line says how to get the matrix
        assert not v.showing_matrix
        assert grid_width > 0.75 * v.width()
        assert v.no_rows_label.isVisible() and "keep full attention rows" in v.no_rows_label.text()
    w, h = cell_size(v)
    assert w >= 30 and h >= 18  # big enough to point at and to read the colour of


def test_every_layer_and_head_is_numbered_when_there_is_room(qtbot):
    v = shown(qtbot, keep_rows=False, size=(1000, 600))
    item = v.grid.plot.getPlotItem()
    (x0, x1), (y0, y1) = v.grid.view.viewRange()
    left, bottom = item.getAxis("left"), item.getAxis("bottom")
    rows = [t for _, ticks in left.tickValues(y0, y1, left.size().height()) for t in ticks]
    cols = [t for _, ticks in bottom.tickValues(x0, x1, bottom.size().width()) for t in ticks]
    assert sorted(set(rows)) == list(range(LAYERS))
    assert sorted(set(cols)) == list(range(HEADS))


@pytest.mark.parametrize("width", [380, 900])
def test_hint_is_never_cut_off(qtbot, width):
    v = shown(qtbot, keep_rows=True, size=(width, 500))
    label = v.grid.readout
    qtbot.waitUntil(lambda: label.width() > 0)
    assert "right-click" in label.text().lower()
    # All of the text fits in the label as laid out (wrapped where it must be).
    needed = label.heightForWidth(label.contentsRect().width()) if label.wordWrap() else label.sizeHint().height()
    assert needed <= label.height()
    assert label.fontMetrics().horizontalAdvance(label.text()) <= label.width() or label.wordWrap()


def test_colour_bar_shows_its_numbers_even_for_a_narrow_range(qtbot):
    from PySide6.QtGui import QImage, QPainter

    from opt_desktop.gui.widgets.heatmap import Heatmap

    hm = Heatmap()
    qtbot.addWidget(hm)
    hm.resize(500, 300)
    hm.show()
    qtbot.waitExposed(hm)
    # Entropies of a random model's heads all lie near ln 4: labels need five digits ("1.3857").
    values = 1.3855 + np.random.default_rng(0).random((4, 4)).astype(np.float32) * 7e-4
    hm.set_data(values)
    qtbot.wait(50)
    axis = hm.colorbar.axis
    image = QImage(10, 10, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        texts = [spec[2] for spec in axis.generateDrawSpecs(painter)[2]]
    finally:
        painter.end()
    assert len(texts) >= 3, texts  # pyqtgraph drops labels that do not fit its fixed 45-pixel axis
    assert all(t.startswith("1.385") or t.startswith("1.386") for t in texts)
