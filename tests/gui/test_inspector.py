"""The Inspector tab and its views, checked against a synthetic run (tests/fakes.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from fakes import fake_events, fake_trace
from opt_desktop.engine.messages.events import ATTENTION_STATS, LensResult, PromptScored
from opt_desktop.gui.widgets.heatmap import Heatmap
from opt_desktop.gui.widgets.inspector import Inspector
from opt_desktop.gui.widgets.token_table import COL_ALTS, COL_ENTROPY, COL_ID, COL_PROB, COL_RANK, COL_TOKEN
from opt_desktop.session import RunTrace

HIDDEN_KEYS = ("norm", "mean", "std", "maxabs")
UR = Qt.ItemDataRole.UserRole


def piece_fn(token_id: int) -> str:
    return f" tok{token_id}"


@pytest.fixture
def trace() -> RunTrace:
    return fake_trace(n_prompt=6, n_gen=8, n_layers=4, n_heads=3, hidden=32)


@pytest.fixture
def inspector(qtbot, trace) -> Inspector:
    w = Inspector(piece_fn=piece_fn)
    qtbot.addWidget(w)
    w.resize(1000, 700)
    w.set_trace(trace)
    w.show()
    qtbot.waitExposed(w)
    return w


def lens_result(trace: RunTrace, pos: int, k: int = 5) -> LensResult:
    rng = np.random.default_rng(pos)
    L1 = trace.n_layers + 1
    ids = rng.integers(4, 300, (L1, k))
    probs = np.sort(rng.random((L1, k)).astype(np.float32), axis=1)[:, ::-1] / 2
    target = trace.next_token(pos)
    return LensResult(position=pos, top_ids=ids, top_probs=probs,
                      top_pieces=tuple(tuple(f" lens{i}" for i in row) for row in ids), target_id=target,
                      target_logprob=np.log(np.linspace(0.05, 0.8, L1)))


# --- token table ---------------------------------------------------------------------------------

def test_table_shows_the_trace(inspector, trace):
    model = inspector.table.model
    assert model.rowCount() == trace.length
    for pos in range(trace.length):
        assert model.index(pos, COL_TOKEN).data(UR) == trace.pieces[pos]
        assert model.index(pos, COL_ID).data(UR) == trace.token_ids[pos]
        assert model.index(pos, COL_RANK).data(UR) == trace.rank[pos]
        if pos == 0:
            assert model.index(pos, COL_PROB).data() == "—"  # nothing predicts the leading </s>
            continue
        p = model.index(pos, COL_PROB).data(UR)
        assert p == pytest.approx(np.exp(trace.logprob[pos]), rel=1e-6)
        assert float(model.index(pos, COL_PROB).data()) == pytest.approx(p, abs=6e-4)
        assert model.index(pos, COL_ENTROPY).data(UR) == pytest.approx(trace.entropy[pos], rel=1e-6)
        assert float(model.index(pos, COL_ENTROPY).data()) == pytest.approx(trace.entropy[pos], abs=6e-3)
        assert model.index(pos, COL_RANK).data() == str(trace.rank[pos])
        alts = model.index(pos, COL_ALTS).data(UR)
        assert [s for s, _ in alts] == [piece_fn(i) for i in trace.top_ids[pos][:5]]
        assert [p for _, p in alts] == pytest.approx(trace.top_probs[pos][:5])
        first = trace.top_ids[pos][0]
        assert model.index(pos, COL_ALTS).data().startswith(f"' tok{first}' ")


def test_prompt_rows_are_italic(inspector, trace):
    model = inspector.table.model
    font = model.index(trace.n_prompt - 1, COL_TOKEN).data(Qt.ItemDataRole.FontRole)
    assert font is not None and font.italic()
    assert model.index(trace.n_prompt, COL_TOKEN).data(Qt.ItemDataRole.FontRole) is None


def test_alternatives_fall_back_to_run_pieces_then_ids(qtbot, trace):
    w = Inspector()  # no piece_fn
    qtbot.addWidget(w)
    w.set_trace(trace)
    texts = w.texts
    assert texts.text(trace.token_ids[3]) == trace.pieces[3]
    assert texts.text(999_999) == "#999999"


def test_alternatives_are_named_once_a_model_can_name_them(qtbot, trace):
    # A reopened session with no model loaded shows '#id' for alternatives the run never used; loading
    # the model must name them on the next repaint, however the table caches its texts.
    names = {}
    w = Inspector(piece_fn=lambda token_id: names.get(token_id))
    qtbot.addWidget(w)
    w.set_trace(trace)
    pos = trace.n_prompt + 1
    index = w.table.model.index(pos, COL_ALTS)
    alt = int(trace.top_ids[pos][0])
    assert alt not in trace.token_ids and f"'#{alt}'" in index.data()  # not one of the run's own tokens
    names.update({int(i): f" named{int(i)}" for i in np.unique(trace.top_ids)})
    assert f"' named{alt}'" in index.data()


def test_refresh_inserts_rows_without_reset(qtbot):
    events = fake_events(n_prompt=5, n_gen=10, n_layers=3, n_heads=2)
    trace = RunTrace(events[0])
    for ev in events[1:5]:  # PromptScored and three tokens
        trace.apply(ev)
    w = Inspector(piece_fn=piece_fn)
    qtbot.addWidget(w)
    w.set_trace(trace)
    model = w.table.model
    assert model.rowCount() == 8
    inserted, resets = [], []
    model.rowsInserted.connect(lambda _p, first, last: inserted.append((first, last)))
    model.modelReset.connect(lambda: resets.append(1))
    for ev in events[5:8]:
        trace.apply(ev)
        w.refresh()
    assert model.rowCount() == trace.length == 11
    assert inserted == [(8, 8), (9, 9), (10, 10)]
    assert not resets
    w.refresh()  # nothing new: nothing announced
    assert len(inserted) == 3
    assert w.hidden.heatmap.data().shape == (4, 11)


def test_prompt_rows_fill_in_when_the_prompt_is_scored(qtbot):
    events = fake_events(n_prompt=5, n_gen=3, n_layers=2, n_heads=2)
    trace = RunTrace(events[0])  # Started only: prompt tokens known, not yet scored
    w = Inspector()
    qtbot.addWidget(w)
    w.set_trace(trace)
    model = w.table.model
    assert model.rowCount() == 5
    assert model.index(3, COL_PROB).data() == "—"
    trace.apply(events[1])  # the first token comes before the prompt's statistics
    w.refresh()
    assert model.rowCount() == 6 and model.index(3, COL_PROB).data() == "—"
    assert "not scored yet" in w.header.text() and "nan" not in w.header.text()  # the last prompt token
    assert isinstance(events[2], PromptScored)
    trace.apply(events[2])
    with qtbot.waitSignal(model.dataChanged, timeout=1000):
        w.refresh()
    assert model.index(3, COL_PROB).data(UR) == pytest.approx(np.exp(trace.logprob[3]))
    assert model.index(3, COL_PROB).data() != "—"
    assert "entropy" in w.header.text() and "not scored" not in w.header.text()


# --- selection -----------------------------------------------------------------------------------

def test_selecting_a_row_moves_every_view(qtbot, inspector, trace):
    pos = trace.n_prompt + 2
    view = inspector.table.view
    rect = view.visualRect(inspector.table.model.index(pos, COL_TOKEN))
    with qtbot.waitSignal(inspector.position_selected, timeout=1000) as blocker:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert blocker.args == [pos]
    assert inspector.selected_position() == pos

    x, y = inspector.hidden.curve.getData()
    np.testing.assert_array_equal(x, np.arange(trace.n_layers + 1))
    np.testing.assert_allclose(y, trace.hidden(inspector.hidden.stats.stat)[:, pos])
    np.testing.assert_array_equal(inspector.hidden.dims, trace.hidden("argmax")[:, pos])
    grid = inspector.attention.grid.data()
    np.testing.assert_array_equal(grid, trace.attention(inspector.attention.stats.stat)[:, :, pos])
    assert "Position %d" % pos in inspector.header.text()


def test_select_position_from_outside_does_not_emit(qtbot, inspector, trace):
    with qtbot.assertNotEmitted(inspector.position_selected):
        inspector.select_position(3)
    assert inspector.selected_position() == 3
    assert inspector.table.selected_position() == 3
    np.testing.assert_array_equal(inspector.attention.grid.data(), trace.attention("entropy")[:, :, 3])
    inspector.select_position(10_000)  # out of range: ignored
    assert inspector.selected_position() == 3


def test_clicking_the_hidden_heatmap_selects_a_token(qtbot, inspector, trace):
    hm = inspector.hidden.heatmap
    qtbot.waitUntil(lambda: hm.view.width() > 50)
    col = 4
    scene_pt = hm.view.mapViewToScene(QPointF(col, 2))
    assert hm.cell_at(scene_pt) == (2, col)
    assert hm.describe(2, col) == (f"layer 1, token {col} '{trace.pieces[col]}': "  # row 2: decoder.layers[1]
                                   f"{trace.hidden('norm')[2, col]:.4g}")
    widget_pt = hm.plot.mapFromScene(scene_pt)
    with qtbot.waitSignal(inspector.position_selected, timeout=1000) as blocker:
        qtbot.mouseClick(hm.plot.viewport(), Qt.MouseButton.LeftButton, pos=widget_pt)
    assert blocker.args == [col]
    assert inspector.table.selected_position() == col


# --- statistics ----------------------------------------------------------------------------------

def test_switching_hidden_statistic_changes_the_image(inspector, trace):
    inspector.select_position(7)
    for key in HIDDEN_KEYS:
        inspector.hidden.stats.set_stat(key)
        np.testing.assert_array_equal(inspector.hidden.heatmap.data(), trace.hidden(key))
        np.testing.assert_array_equal(inspector.hidden.heatmap.image_item.image, trace.hidden(key))
        np.testing.assert_allclose(inspector.hidden.curve.getData()[1], trace.hidden(key)[:, 7])


def test_switching_attention_statistic_changes_the_grid(inspector, trace):
    inspector.tabs.setCurrentWidget(inspector.attention)
    inspector.select_position(5)
    for key in ATTENTION_STATS:
        inspector.attention.stats.set_stat(key)
        np.testing.assert_array_equal(inspector.attention.grid.image_item.image, trace.attention(key)[:, :, 5])


def test_unfed_last_token_shows_blank_not_a_crash(inspector, trace):
    last = trace.length - 1
    assert np.isnan(trace.hidden("norm")[:, last]).all()
    inspector.tabs.setCurrentWidget(inspector.attention)
    inspector.select_position(last)
    assert np.isnan(inspector.attention.grid.data()).all()
    assert "never fed" in inspector.attention.grid_caption.text()
    assert np.isnan(inspector.hidden.curve.getData()[1]).all()
    inspector.tabs.setCurrentWidget(inspector.hidden)
    assert inspector.hidden.heatmap.data().shape == (trace.n_layers + 1, trace.length)
    assert "not fed" in inspector.hidden.plot.getPlotItem().titleLabel.text


# --- attention matrix ----------------------------------------------------------------------------

def test_full_matrix_only_when_rows_were_kept(qtbot):
    plain = fake_trace(n_prompt=5, n_gen=4, n_layers=3, n_heads=2, keep_rows=False)
    kept = fake_trace(n_prompt=5, n_gen=4, n_layers=3, n_heads=2, keep_rows=True)
    w = Inspector()
    qtbot.addWidget(w)
    w.set_trace(plain)
    w.tabs.setCurrentWidget(w.attention)
    assert not w.attention.showing_matrix
    assert "keep full attention rows" in w.attention.no_rows_label.text()

    w.set_trace(kept)
    assert w.attention.showing_matrix
    np.testing.assert_array_equal(w.attention.matrix.data(), kept.attention_matrix(0, 0), strict=True)
    # Clicking a head in the grid shows that head's matrix.
    w.attention.grid.cell_clicked.emit(2, 1)
    assert w.attention.matrix_layer_head() == (2, 1)
    np.testing.assert_array_equal(w.attention.matrix.data(), kept.attention_matrix(2, 1))
    # A click on a matrix row picks that query token.
    with qtbot.waitSignal(w.position_selected, timeout=1000) as blocker:
        w.attention.matrix.cell_clicked.emit(6, 2)
    assert blocker.args == [6]


# --- logit lens ----------------------------------------------------------------------------------

def test_lens_is_requested_and_shown(qtbot, inspector, trace):
    pos = trace.n_prompt + 1
    inspector.select_position(pos)
    with qtbot.waitSignal(inspector.lens_requested, timeout=1000) as blocker:
        inspector.tabs.setCurrentWidget(inspector.lens)
    assert blocker.args == [pos]
    assert "Computing" in inspector.lens.message_text()

    result = lens_result(trace, pos)
    inspector.set_lens(result)
    table = inspector.lens.table
    assert table.rowCount() == trace.n_layers + 1
    # Rows are labelled as everywhere else: emb, 0 … L-1 (row i + 1 is the output of decoder.layers[i]).
    assert [table.verticalHeaderItem(r).text() for r in range(trace.n_layers + 1)] == \
        ["emb"] + [str(i) for i in range(trace.n_layers)]
    for r in range(trace.n_layers + 1):
        for c in range(5):
            item = table.item(r, c)
            tid, p = item.data(Qt.ItemDataRole.UserRole)
            assert tid == result.top_ids[r, c]
            assert p == pytest.approx(result.top_probs[r, c])
            assert item.text().startswith(f"' lens{tid}'")
    # The plot is on a log axis: the curve draws log10 p.
    np.testing.assert_allclose(10 ** inspector.lens.curve.getData()[1], np.exp(result.target_logprob), rtol=1e-6)
    assert trace.pieces[pos + 1] in inspector.lens.message_text()

    # Selecting the same position again asks for nothing; another position asks again.
    with qtbot.assertNotEmitted(inspector.lens_requested):
        inspector.select_position(pos)
    with qtbot.waitSignal(inspector.lens_requested, timeout=1000) as blocker:
        inspector.select_position(pos + 1)
    assert blocker.args == [pos + 1]
    inspector.set_lens(result)  # late answer for the old position: ignored
    assert inspector.lens.result is None
    inspector.set_lens_unavailable("the engine is busy")
    assert inspector.lens.message_text() == "the engine is busy"


def test_lens_not_requested_while_its_tab_is_hidden(qtbot, inspector):
    assert inspector.tabs.currentWidget() is not inspector.lens
    assert not inspector.lens.isVisible()
    with qtbot.assertNotEmitted(inspector.lens_requested):
        inspector.select_position(2)
    # Not because the lens is never asked for: showing the tab asks for the selected position at once.
    with qtbot.waitSignal(inspector.lens_requested, timeout=1000) as blocker:
        inspector.tabs.setCurrentWidget(inspector.lens)
    assert blocker.args == [2]


def test_lens_of_unfed_token_is_unavailable_until_fed(qtbot):
    events = fake_events(n_prompt=5, n_gen=6, n_layers=3, n_heads=2)
    trace = RunTrace(events[0])
    for ev in events[1:4]:
        trace.apply(ev)
    w = Inspector()
    qtbot.addWidget(w)
    w.set_trace(trace)
    w.tabs.setCurrentWidget(w.lens)
    last = trace.length - 1
    with qtbot.assertNotEmitted(w.lens_requested):
        w.select_position(last)
    assert "not been fed" in w.lens.message_text()
    trace.apply(events[4])  # the next token feeds `last`
    with qtbot.waitSignal(w.lens_requested, timeout=1000) as blocker:
        w.refresh()
    assert blocker.args == [last]


# --- plumbing ------------------------------------------------------------------------------------

def test_no_trace_and_replacing_the_trace(qtbot, trace):
    w = Inspector()
    qtbot.addWidget(w)
    w.refresh()
    assert w.selected_position() is None
    assert w.pages.currentWidget() is w.placeholder
    w.set_trace(trace)
    assert w.pages.currentWidget() is not w.placeholder
    assert w.selected_position() == trace.n_prompt - 1
    w.set_trace(None)
    assert w.selected_position() is None
    assert w.table.model.rowCount() == 0
    assert w.hidden.heatmap.data().size == 0


def test_hidden_tabs_catch_up_when_shown(qtbot):
    events = fake_events(n_prompt=4, n_gen=6, n_layers=2, n_heads=2, keep_rows=True)
    trace = RunTrace(events[0])
    for ev in events[1:3]:
        trace.apply(ev)
    w = Inspector()
    qtbot.addWidget(w)
    w.set_trace(trace)
    for ev in events[3:]:
        trace.apply(ev)
        w.refresh()
    assert w.tabs.currentWidget() is w.hidden
    w.tabs.setCurrentWidget(w.attention)
    np.testing.assert_array_equal(w.attention.matrix.data(), trace.attention_matrix(0, 0))


def test_heatmap_nan_and_constant_data(qtbot):
    hm = Heatmap()
    qtbot.addWidget(hm)
    hm.set_data(np.full((3, 4), np.nan, np.float32))
    assert hm.colorbar.levels() == (0.0, 1.0)
    hm.set_data(np.ones((2, 2), np.float32))
    lo, hi = hm.colorbar.levels()
    assert lo < 1.0 < hi
    assert hm.describe(0, 0).endswith(": 1")
    hm.set_data(np.array([[np.nan, 2.0]], np.float32))
    assert hm.describe(0, 0).endswith("no value")
    with pytest.raises(ValueError):
        hm.set_data(np.zeros(3))


# --- forks from the token table --------------------------------------------------------------------

def test_table_menu_forks_with_an_alternative(qtbot, inspector, trace):
    pos = trace.n_prompt + 1
    menu = inspector.table.fork_menu(pos)
    forks = [a for a in menu.actions() if a.text().startswith("Fork here with")]
    expected = [(int(t), float(p)) for t, p in zip(trace.top_ids[pos], trace.top_probs[pos])
                if int(t) != trace.token_ids[pos]]
    assert len(forks) == len(expected) > 0
    assert forks[0].text().startswith(f"Fork here with ' tok{expected[0][0]}' (p = ")
    with qtbot.waitSignal(inspector.fork_requested, timeout=1000) as blocker:
        forks[-1].trigger()
    assert blocker.args == [pos, expected[-1][0]]


def test_table_cannot_fork_position_0(inspector):
    menu = inspector.table.fork_menu(0)
    assert [a.text() for a in menu.actions() if not a.isSeparator()] == [
        "Position 0 (the leading </s>) cannot be forked: nothing predicts it"]
    assert not menu.actions()[-1].isEnabled()


def test_table_right_click_and_double_click_open_the_fork_menu(qtbot, inspector, trace):
    from fake_runs import capture_next_menu

    view = inspector.table.view
    pos = trace.n_prompt + 2
    rect = view.visualRect(inspector.table.model.index(pos, COL_ALTS))
    shown = capture_next_menu()
    inspector.table.view.customContextMenuRequested.emit(rect.center())
    qtbot.waitUntil(lambda: bool(shown), timeout=2000)
    assert shown[0][0] == f"Fork the run at position {pos} ('{trace.pieces[pos]}')"
    shown = capture_next_menu()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())  # a double click's first press
    qtbot.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: bool(shown), timeout=2000)
    assert any(t.startswith("Fork here with") for t in shown[0])


def test_alt_keys_pick_the_views(qtbot, inspector):
    """Alt+A shows the attention view, Alt+L the logit lens, Alt+S the hidden states: no mouse needed."""
    inspector.activateWindow()
    qtbot.waitUntil(inspector.isActiveWindow)
    for key, view in ((Qt.Key.Key_A, inspector.attention), (Qt.Key.Key_L, inspector.lens),
                      (Qt.Key.Key_S, inspector.hidden)):
        qtbot.keyClick(inspector.table, key, Qt.KeyboardModifier.AltModifier)
        assert inspector.tabs.currentWidget() is view
