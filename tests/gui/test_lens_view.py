"""The logit lens a person can read: whole cells, a log probability axis, the next token's rank per layer."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics

from fakes import fake_trace
from opt_desktop.engine.messages.events import LensResult
from opt_desktop.gui.widgets.inspector import Inspector
from opt_desktop.gui.widgets.lens_view import COL_NEXT_P, COL_RANK, TOP_N, LensView
from opt_desktop.gui.widgets.token_table import format_prob
from shown import shown_item, shown_tip

UR = Qt.ItemDataRole.UserRole
L1 = 13  # opt-125m: emb + 12 layers
TARGET = 50_000


def long_lens(target_in_top: bool = True) -> LensResult:
    """A lens whose tokens are long words (the old table cut them to "' magnit…") and whose next-token
    probabilities are the typical 1e-4 … 1e-2."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 40_000, (L1, TOP_N))
    if target_in_top:
        ids[-3:, 2] = TARGET  # the next token is third in the last three rows
    probs = np.sort(rng.random((L1, TOP_N)), axis=1)[:, ::-1] * 0.02
    pieces = tuple(tuple(" magnitude" if i == TARGET else f" representation{i}" for i in row) for row in ids)
    target_p = np.geomspace(1e-4, 1e-2, L1)
    return LensResult(position=7, top_ids=ids, top_probs=probs.astype(np.float32), top_pieces=pieces,
                      target_id=TARGET, target_logprob=np.log(target_p))


@pytest.fixture
def view(qtbot) -> LensView:
    v = LensView()
    qtbot.addWidget(v)
    v.resize(1000, 500)
    v.show()
    qtbot.waitExposed(v)
    return v


def test_every_cell_shows_its_whole_token_and_probability(qtbot, view):
    result = long_lens()
    view.set_result(result, " magnitude")
    table = view.table
    for r in range(L1):
        for c in range(TOP_N):
            item = table.item(r, c)
            piece, p = result.top_pieces[r][c], float(result.top_probs[r, c])
            assert item.text() == f"'{piece}'  {format_prob(p)}"  # the whole token, then its probability
            assert "…" not in item.text()
            font = item.font()  # the next token's cells are bold, and wider
            needed = QFontMetrics(font).horizontalAdvance(item.text())
            assert table.columnWidth(c) >= needed
            assert piece in shown_tip(item.toolTip()) and f"{p:.4g}" in shown_tip(item.toolTip())
    for c in (COL_RANK, COL_NEXT_P):
        for r in range(L1):
            item = table.item(r, c)
            assert table.columnWidth(c) >= QFontMetrics(item.font()).horizontalAdvance(item.text())
    # Cells are never elided (a narrow panel scrolls sideways), and where the window is wide enough
    # the table gets the width its columns need, the plot the rest.
    assert table.textElideMode() == Qt.TextElideMode.ElideNone
    view.resize(1800, 500)
    qtbot.waitUntil(lambda: view.split.sizes()[0] >= view.table_width_needed())
    assert view.split.sizes()[1] >= 400


def test_rows_are_labelled_as_everywhere_else(view):
    view.set_result(long_lens())
    labels = [view.table.verticalHeaderItem(r).text() for r in range(L1)]
    assert labels == ["emb"] + [str(i) for i in range(L1 - 1)]
    assert "decoder.layers[0]" in shown_tip(view.table.verticalHeaderItem(1).toolTip())


def test_probability_axis_is_logarithmic_and_small_values_stand_apart(view):
    result = long_lens()
    view.set_result(result)
    item = view.plot.getPlotItem()
    assert item.getAxis("left").logMode
    assert item.ctrl.logYCheck.isChecked()
    x, y = view.curve.getData()  # in log mode, log10 p
    np.testing.assert_allclose(y, np.log10(np.geomspace(1e-4, 1e-2, L1)), atol=1e-9)
    low, high = item.getViewBox().viewRange()[1]
    assert low <= -4 and high >= 0  # 1e-4 … 1 in view
    # 1e-4 and 1e-2 lie a third of the plot's height apart, not both on the zero line.
    assert (y[-1] - y[0]) / (high - low) > 0.3
    # A probability that underflowed to 0 stays on the plot instead of at -inf.
    zero = long_lens()
    zero.target_logprob[0] = -np.inf
    view.set_result(zero)
    assert np.isfinite(view.curve.getData()[1]).all()


def test_stored_ranks_are_shown_per_layer(view):
    result = long_lens(target_in_top=False)
    ranks = np.arange(L1, 0, -1) * 1000  # from a stored lens table: exact, though far below the top 5
    ranks[-1] = 1
    view.set_result(result, " magnitude", ranks)
    assert view.ranks_exact
    shown = [view.table.item(r, COL_RANK).text() for r in range(L1)]
    assert shown == [f"{int(k):,}" for k in ranks]
    assert [view.table.item(r, COL_RANK).data(UR) for r in range(L1)] == [int(k) for k in ranks]
    probs = [view.table.item(r, COL_NEXT_P).text() for r in range(L1)]
    assert probs == [format_prob(float(p)) for p in np.exp(result.target_logprob)]
    assert "' magnitude'" in shown_tip(view.table.item(0, COL_RANK).toolTip())
    # The points of the curve say the rank too.
    assert view.points.data["data"].tolist() == [int(k) for k in ranks]


def test_live_lens_ranks_come_from_the_top_tokens_when_they_can(view):
    result = long_lens(target_in_top=True)
    view.set_result(result, " magnitude")  # no ranks given: the live lens from one position's rows
    assert not view.ranks_exact
    shown = [view.table.item(r, COL_RANK).text() for r in range(L1)]
    assert shown == [f"> {TOP_N}"] * (L1 - 3) + ["3"] * 3  # known only where the next token is in the top 5
    for r in range(L1 - 3, L1):
        assert view.table.item(r, 2).font().bold()  # and that cell is the bold one


def test_no_next_token_shows_dashes(view):
    result = long_lens()
    end = LensResult(position=result.position, top_ids=result.top_ids, top_probs=result.top_probs,
                     top_pieces=result.top_pieces, target_id=None, target_logprob=np.full(L1, np.nan))
    view.set_result(end, None, np.zeros(L1, np.int64))
    assert {view.table.item(r, COL_RANK).text() for r in range(L1)} == {"–"}
    assert {view.table.item(r, COL_NEXT_P).text() for r in range(L1)} == {"–"}
    assert shown_item(view.plot.getPlotItem().titleLabel.item) == "no next token"


def test_the_inspector_passes_stored_ranks_on(qtbot):
    trace = fake_trace(n_prompt=4, n_gen=5, n_layers=3, n_heads=2)
    w = Inspector()
    qtbot.addWidget(w)
    w.set_trace(trace)
    w.tabs.setCurrentWidget(w.lens)
    pos = w.selected_position()
    rng = np.random.default_rng(1)
    ids = rng.integers(4, 300, (4, TOP_N))
    result = LensResult(position=pos, top_ids=ids, top_probs=np.full((4, TOP_N), 0.1, np.float32),
                        top_pieces=tuple(tuple(f"t{i}" for i in row) for row in ids),
                        target_id=trace.next_token(pos), target_logprob=np.log(np.full(4, 0.01)))
    w.set_lens(result, np.array([40, 30, 20, 10]))
    assert w._lens_state == ("result", pos)
    assert [w.lens.table.item(r, COL_RANK).text() for r in range(4)] == ["40", "30", "20", "10"]


@pytest.mark.parametrize("width", [720, 1400])
def test_the_layer_axis_names_emb_and_its_labels_never_touch(qtbot, view, width):
    from PySide6.QtGui import QImage, QPainter

    view.resize(width, 320)
    view.set_result(long_lens())
    qtbot.wait(50)
    axis = view.plot.getPlotItem().getAxis("bottom")
    image = QImage(10, 10, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        specs = axis.generateDrawSpecs(painter)[2]
    finally:
        painter.end()
    texts = [s[2] for s in specs]
    assert texts[0] == "emb" and len(texts) >= 3  # pyqtgraph drops a first label that reaches past the axis
    rects = [s[0] for s in specs]
    assert all(not a.intersects(b) for a, b in zip(rects, rects[1:]))


def test_table_gets_its_width_after_a_resize_while_hidden(qtbot):
    # The Inspector's "Views only" resizes the lens tab while another tab is shown.
    from PySide6.QtWidgets import QLabel, QTabWidget

    tabs = QTabWidget()
    qtbot.addWidget(tabs)
    view = LensView()
    tabs.addTab(QLabel("other"), "other")
    tabs.addTab(view, "lens")
    tabs.resize(900, 500)
    tabs.show()
    tabs.setCurrentWidget(view)
    result = long_lens()
    view.set_result(result)
    qtbot.wait(50)
    tabs.setCurrentIndex(0)
    tabs.resize(2200, 600)
    qtbot.wait(50)
    tabs.setCurrentWidget(view)
    needed = view.table_width_needed()
    qtbot.waitUntil(lambda: abs(view.split.sizes()[0] - needed) <= 2)  # its columns, no more: the plot has the rest
    assert view.split.sizes()[1] > 0.35 * sum(view.split.sizes())


def demo_lens() -> LensResult:
    """The demo model's lens: embed and 4 layers."""
    result = long_lens()
    return LensResult(position=7, top_ids=result.top_ids[:5], top_probs=result.top_probs[:5],
                      top_pieces=result.top_pieces[:5], target_id=TARGET, target_logprob=result.target_logprob[:5])


def drawn_labels(axis) -> list[tuple[str, object]]:
    from PySide6.QtGui import QImage, QPainter

    image = QImage(10, 10, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        specs = axis.generateDrawSpecs(painter)[2]
    finally:
        painter.end()
    return [(s[2], s[0]) for s in specs]


def test_every_layer_of_a_small_model_is_labelled_in_a_narrow_plot(qtbot):
    """Issue 23: in the window the lens plot of the demo model read only "emb" and "2"."""
    from opt_desktop.engine.messages.rows import row_tick
    from opt_desktop.gui.widgets.heatmap import IndexAxis

    axis = IndexAxis("bottom")
    axis.label_fn, axis.first_apart, axis.count = row_tick, True, 5
    # 116 pixels for the 5 rows (and 2 % padding): the plot beside the lens table in a 1400 × 900 window.
    (_, ticks), = axis.tickValues(-0.6, 4.6, 116)
    assert [row_tick(t) for t in ticks] == ["emb", "0", "1", "2", "3"]

    view = LensView()
    qtbot.addWidget(view)
    view.resize(735, 320)
    view.show()
    view.set_result(demo_lens())
    qtbot.wait(50)
    labels = drawn_labels(view.plot.getPlotItem().getAxis("bottom"))
    assert [text for text, _ in labels] == ["emb", "0", "1", "2", "3"]
    rects = [rect for _, rect in labels]
    assert all(not a.intersects(b) for a, b in zip(rects, rects[1:]))
