"""The outlier-dimension labels of the per-layer plot stay inside the plot and never overlap."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import fake_trace
from opt_desktop.gui.widgets.hidden_view import HiddenView


def shown(qtbot, n_layers: int, size, dims=None, values=None) -> HiddenView:
    trace = fake_trace(n_prompt=5, n_gen=3, n_layers=n_layers, n_heads=2, hidden=4096)
    pos = 3
    if dims is not None:
        trace.hidden("argmax")[:, pos] = dims
    if values is not None:
        trace.hidden("norm")[:, pos] = values
    v = HiddenView()
    qtbot.addWidget(v)
    v.resize(*size)
    v.set_trace(trace)
    v.set_position(pos)
    v.show()
    qtbot.waitExposed(v)
    qtbot.wait(50)  # the plot's auto-range settles, and the labels are placed again
    return v


def check_labels(v: HiddenView) -> list:
    area = v.plot.getPlotItem().getViewBox().sceneBoundingRect()
    in_view = v.plot.viewport().rect().adjusted(-1, -1, 1, 1)  # the plot itself is in view (to a pixel's rounding)
    assert in_view.contains(v.plot.mapFromScene(area).boundingRect())
    rects = v.dim_label_rects()
    for rect in rects:
        assert area.contains(rect), f"label {rect} leaves the plot {area}"
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            assert not a.intersects(b), f"labels {a} and {b} overlap"
    return rects


@pytest.mark.parametrize("n_layers, size", [(12, (900, 420)), (24, (700, 320)), (48, (800, 360))])
def test_labels_inside_the_plot_and_apart(qtbot, n_layers, size):
    L1 = n_layers + 1
    rng = np.random.default_rng(n_layers)
    dims = rng.integers(1000, 4096, L1)  # a new four-digit dimension at every row: the crowded case
    values = np.linspace(0, 1, L1) ** 3 * 40 + rng.random(L1)  # the largest value at the top edge of the range
    v = shown(qtbot, n_layers, size, dims, values)
    rects = check_labels(v)
    assert rects, "some outlier dimensions are labelled"
    texts = [item.textItem.toPlainText() for item in v._dim_labels]
    assert set(texts) <= {str(int(d)) for d in dims}
    # Resizing places them again: still inside and apart.
    v.resize(size[0] + 300, size[1] + 200)
    qtbot.wait(50)
    check_labels(v)


def test_a_dimension_is_named_where_it_takes_over(qtbot):
    dims = np.array([12, 588, 588, 588, 588, 588, 2, 2])  # emb, then layers 0 … 6
    v = shown(qtbot, 7, (900, 420), dims)
    texts = [item.textItem.toPlainText() for item in v._dim_labels]
    assert texts == ["12", "588", "2"]  # each change once, not "588" five times
    check_labels(v)
    assert "dim 588: layer 0–4" in v.outliers.text()


def test_a_long_title_is_cut_to_the_plot_not_past_it(qtbot):
    from opt_desktop.gui.widgets.hidden_view import token_name

    v = shown(qtbot, 12, (700, 380))
    trace = v._trace
    trace.pieces[3] = " <" + "supercalifragilistic" * 3  # token_name cuts it; the stat name is long too
    v.stats.set_stat("maxabs")
    v.set_position(3)
    item = v.plot.getPlotItem()
    full = f"max |x| at {token_name(trace, 3)}"
    qtbot.waitUntil(lambda: v.title.text == full)
    for width in (700, 420, 900, 400):
        v.resize(width, 380)
        qtbot.wait(50)
        drawn = item.titleLabel.item
        assert drawn.sceneBoundingRect().width() <= item.sceneBoundingRect().width()
        assert item.sceneBoundingRect().contains(drawn.sceneBoundingRect())
        # and the title never widens the plot past its widget (pyqtgraph sizes a plot to its title)
        in_view = v.plot.viewport().rect().adjusted(-1, -1, 1, 1)
        assert in_view.contains(v.plot.mapFromScene(item.sceneBoundingRect()).boundingRect())
        shown_text = v.title.shown()
        assert shown_text == full or (shown_text.endswith("…") and full.startswith(shown_text[:-1]))
    assert v.title.shown() != full  # at 420 pixels it had to be cut


@pytest.mark.parametrize("width", [560, 730, 1200])
def test_layer_numbers_on_the_axis_never_touch(qtbot, width):
    from PySide6.QtGui import QFontMetrics

    v = shown(qtbot, 12, (width, 320))
    axis = v.plot.getPlotItem().getAxis("bottom")
    (x0, x1), _ = v.plot.getPlotItem().getViewBox().viewRange()
    length = axis.size().width()
    levels = axis.tickValues(x0, x1, length)
    ticks = [t for _, values in levels for t in values]
    labels = axis.tickStrings(ticks, 1, 1)
    assert labels[0] == "emb" and len(ticks) >= 3
    step = levels[0][0]
    assert all(int(label) % step == 0 for label in labels[1:])  # "emb, 2, 4, 6", never "emb, 1, 3, 5"
    metrics = QFontMetrics(axis.style["tickFont"] or axis.font())
    px = [(t - x0) / (x1 - x0) * length for t in ticks]
    for (a, la), (b, lb) in zip(zip(px, labels), zip(px[1:], labels[1:])):
        assert b - a >= (metrics.horizontalAdvance(la) + metrics.horizontalAdvance(lb)) / 2 + 2, (la, lb)


def test_the_outlier_line_keeps_two_lines_and_fits_them(qtbot):
    from PySide6.QtCore import Qt

    rng = np.random.default_rng(7)
    dims = rng.integers(1000, 4096, 25)  # 25 runs: more than any width names
    v = shown(qtbot, 24, (520, 360), dims)
    label = v.outliers
    height = label.height()

    def fits() -> bool:
        flags = int(Qt.TextFlag.TextWordWrap)
        return label.fontMetrics().boundingRect(0, 0, label.width(), 10**6, flags, label.text()).height() <= height

    assert "hover" in label.text() and fits()
    narrow = label.text()
    v.resize(1400, 360)  # wider: more runs named, the plot keeps its height
    qtbot.waitUntil(lambda: label.text() != narrow)
    assert fits() and label.height() == height
    assert label.text().count("dim ") >= 2 and "more (hover to see all)" in label.text()
    v.set_position(None)  # no line at all: the plot does not grow into its room
    assert label.text() == "" and label.height() == height
