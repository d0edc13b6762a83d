"""Editing the head mask in the attention grid: menus, edit-mode clicks, marks, and the Inspector's summary."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPointF, Qt

from fake_runs import capture_next_menu, intervened_trace
from fakes import fake_trace
from opt_desktop.engine.messages.settings import HeadScale
from opt_desktop.gui.widgets.attention_view import AttentionView
from opt_desktop.gui.widgets.inspector import Inspector

L, H = 3, 4  # the fake model's layers and heads


@pytest.fixture
def trace():
    return fake_trace(n_prompt=5, n_gen=4, n_layers=L, n_heads=H)


@pytest.fixture
def view(qtbot, trace):
    v = AttentionView()
    qtbot.addWidget(v)
    v.resize(900, 500)
    v.set_trace(trace)
    v.set_position(3)
    v.show()
    qtbot.waitExposed(v)
    return v


def action(menu, text):
    found = [a for a in menu.actions() if a.text() == text]
    assert found, f"no action {text!r} in {[a.text() for a in menu.actions()]}"
    return found[0]


def triples(mask):
    return [(m.layer, m.head, m.scale) for m in mask]


def test_menu_ablates_one_head_a_layer_and_a_head_index(qtbot, view):
    menu = view.mask_menu(("head", 1, 2))  # head 2 of decoder.layers[1]
    with qtbot.waitSignal(view.head_mask_changed, timeout=1000) as blocker:
        action(menu, "Ablate head L1H2").trigger()
    assert triples(blocker.args[0]) == [(1, 2, 0.0)]
    assert all(isinstance(m, HeadScale) for m in blocker.args[0])

    with qtbot.waitSignal(view.head_mask_changed, timeout=1000) as blocker:
        action(view.mask_menu(("head", 0, 1)), "Ablate layer 0").trigger()
    assert triples(blocker.args[0]) == [(0, h, 0.0) for h in range(H)] + [(1, 2, 0.0)]

    with qtbot.waitSignal(view.head_mask_changed, timeout=1000) as blocker:
        action(view.mask_menu(("head", 0, 3)), "Ablate head 3 in every layer").trigger()
    expected = sorted({(0, h) for h in range(H)} | {(1, 2)} | {(la, 3) for la in range(L)})
    assert triples(blocker.args[0]) == [(la, h, 0.0) for la, h in expected]
    assert view.head_mask() == blocker.args[0]
    assert set(view.mask_overlay.cells()) == set(expected)  # every masked head is marked on the grid


def test_unmask_and_clear(qtbot, view):
    view.set_head_mask([(0, h, 0.0) for h in range(H)] + [(2, 1, 0.5)])
    menu = view.mask_menu(("head", 0, 2))
    assert action(menu, "Unmask head L0H2").isEnabled()
    assert action(menu, "Unmask head 2 in every layer").isEnabled()  # layer 0 has its head 2 masked
    assert not action(view.mask_menu(("head", 1, 1)), "Unmask head L1H1").isEnabled()
    with qtbot.waitSignal(view.head_mask_changed, timeout=1000) as blocker:
        action(menu, "Unmask head L0H2").trigger()
    assert (0, 2) not in {(la, h) for la, h, _ in triples(blocker.args[0])}
    assert len(blocker.args[0]) == H

    with qtbot.waitSignal(view.head_mask_changed, timeout=1000) as blocker:
        action(view.mask_menu(("layer", 0, -1)), "Unmask layer 0").trigger()
    assert triples(blocker.args[0]) == [(2, 1, 0.5)]
    assert not action(view.mask_menu(("layer", 0, -1)), "Unmask layer 0").isEnabled()

    with qtbot.waitSignal(view.head_mask_changed, timeout=1000) as blocker:
        action(view.mask_menu(("head", 1, 1)), "Clear mask").trigger()
    assert blocker.args[0] == ()
    assert view.mask_overlay.cells() == {}
    assert not action(view.mask_menu(("head", 1, 1)), "Clear mask").isEnabled()
    with qtbot.assertNotEmitted(view.head_mask_changed):
        view.clear_head_mask()  # nothing to clear: no signal


def test_scale_dialog_and_the_bar_scale(qtbot, view, monkeypatch):
    from opt_desktop.gui.widgets import attention_mask_editing

    monkeypatch.setattr(attention_mask_editing.QInputDialog, "getDouble", lambda *a, **k: (1.5, True))
    with qtbot.waitSignal(view.head_mask_changed, timeout=1000) as blocker:
        action(view.mask_menu(("head", 2, 0)), "Scale head L2H0…").trigger()
    assert triples(blocker.args[0]) == [(2, 0, 1.5)]
    assert view.mask_overlay.cells() == {(2, 0): 1.5}

    monkeypatch.setattr(attention_mask_editing.QInputDialog, "getDouble", lambda *a, **k: (1.0, True))
    with qtbot.waitSignal(view.head_mask_changed, timeout=1000) as blocker:
        action(view.mask_menu(("head", 2, 0)), "Scale head L2H0…").trigger()
    assert blocker.args[0] == ()  # scaling by 1 is no mask at all

    monkeypatch.setattr(attention_mask_editing.QInputDialog, "getDouble", lambda *a, **k: (0.25, False))
    with qtbot.assertNotEmitted(view.head_mask_changed):
        action(view.mask_menu(("head", 2, 0)), "Scale head L2H0…").trigger()  # cancelled


def test_edit_mode_click_toggles_a_head_and_keeps_the_matrix(qtbot, view):
    grid = view.grid
    qtbot.waitUntil(lambda: grid.view.width() > 50)
    before = view.matrix_layer_head()
    view.mask_bar.edit_button.setChecked(True)
    view.mask_bar.scale_spin.setValue(0.5)
    scene_pt = grid.view.mapViewToScene(QPointF(2, 1))  # column = head 2, row = layer 1
    widget_pt = grid.plot.mapFromScene(scene_pt)
    with qtbot.waitSignal(view.head_mask_changed, timeout=1000) as blocker:
        qtbot.mouseClick(grid.plot.viewport(), Qt.MouseButton.LeftButton, pos=widget_pt)
    assert triples(blocker.args[0]) == [(1, 2, 0.5)]
    assert view.matrix_layer_head() == before  # in edit mode a click masks instead of picking the matrix
    with qtbot.waitSignal(view.head_mask_changed, timeout=1000) as blocker:
        qtbot.mouseClick(grid.plot.viewport(), Qt.MouseButton.LeftButton, pos=widget_pt)
    assert blocker.args[0] == ()  # the same click again unmasks


def test_edit_mode_clicks_on_axis_numbers_mask_a_layer_and_a_head_index(qtbot, view):
    grid = view.grid
    qtbot.waitUntil(lambda: grid.view.width() > 50)
    view.mask_bar.edit_button.setChecked(True)
    item = grid.plot.getPlotItem()
    left, bottom = item.getAxis("left").sceneBoundingRect(), item.getAxis("bottom").sceneBoundingRect()
    row_pt = QPointF(left.center().x(), grid.view.mapViewToScene(QPointF(0, 2)).y())  # layer number 2
    col_pt = QPointF(grid.view.mapViewToScene(QPointF(1, 0)).x(), bottom.center().y())  # head number 1
    assert view.target_at(row_pt) == ("layer", 2, -1)
    assert view.target_at(col_pt) == ("index", -1, 1)
    with qtbot.waitSignal(view.head_mask_changed, timeout=1000) as blocker:
        qtbot.mouseClick(grid.plot.viewport(), Qt.MouseButton.LeftButton, pos=grid.plot.mapFromScene(row_pt))
    assert triples(blocker.args[0]) == [(2, h, 0.0) for h in range(H)]
    with qtbot.waitSignal(view.head_mask_changed, timeout=1000) as blocker:
        qtbot.mouseClick(grid.plot.viewport(), Qt.MouseButton.LeftButton, pos=grid.plot.mapFromScene(col_pt))
    assert sorted((la, h) for la, h, _ in triples(blocker.args[0])) == sorted(
        {(2, h) for h in range(H)} | {(la, 1) for la in range(L)})


def test_plain_click_still_picks_the_matrix_head(qtbot, view):
    with qtbot.assertNotEmitted(view.head_mask_changed):
        view.grid.cell_clicked.emit(2, 3)
    assert view.matrix_layer_head() == (2, 3)


def test_set_head_mask_is_quiet_sorted_and_drops_scale_one(qtbot, view):
    with qtbot.assertNotEmitted(view.head_mask_changed):
        view.set_head_mask([HeadScale(layer=2, head=1, scale=0.0), (0, 3, 1.0), (0, 2, 0.5)])
    assert triples(view.head_mask()) == [(0, 2, 0.5), (2, 1, 0.0)]
    assert view.mask_overlay.cells() == {(0, 2): 0.5, (2, 1): 0.0}
    assert view.mask_bar.summary.text() == "2 heads masked: 0:2 ×0.5, 2:1"


def test_marks_follow_the_grid_and_a_smaller_model(qtbot, view):
    view.set_head_mask([(2, 3, 0.0), (0, 0, 0.0)])
    view.set_position(5)  # another token: the marks stay
    assert view.mask_overlay.cells() == {(2, 3): 0.0, (0, 0): 0.0}
    small = fake_trace(n_prompt=4, n_gen=3, n_layers=2, n_heads=2)
    view.set_trace(small)
    view.set_position(2)
    assert view.mask_overlay.cells() == {(0, 0): 0.0}  # (2, 3) is not in this model: not drawn...
    assert triples(view.head_mask()) == [(0, 0, 0.0), (2, 3, 0.0)]  # ...but still part of the mask
    view.set_position(None)
    assert view.mask_overlay.cells() == {}  # no grid, no marks




# --- the Inspector -------------------------------------------------------------------------------

def test_inspector_reexposes_the_mask(qtbot, trace):
    w = Inspector()
    qtbot.addWidget(w)
    w.set_trace(trace)
    with qtbot.waitSignal(w.head_mask_changed, timeout=1000) as blocker:
        action(w.attention.mask_menu(("head", 0, 0)), "Ablate head L0H0").trigger()
    assert triples(blocker.args[0]) == [(0, 0, 0.0)]
    assert w.head_mask() == blocker.args[0]
    assert "Next run's head mask: 0:0" in w.interventions.text()
    with qtbot.assertNotEmitted(w.head_mask_changed):
        w.set_head_mask(())
    assert w.head_mask() == ()
    assert w.interventions.isHidden()  # no interventions in the run, none edited


def test_inspector_states_the_runs_interventions(qtbot):
    run = intervened_trace(head_mask=[(1, 0, 0.0), (2, 3, 0.5)], hidden_positions=(2, 3),
                           changes=[(2, [(1, 0, 0.0)])], n_prompt=5, n_gen=4, n_layers=L, n_heads=H)
    w = Inspector()
    qtbot.addWidget(w)
    w.set_head_mask([(1, 0, 0.0)])  # what the run ended with: nothing new to say about the next run
    w.set_trace(run)
    text = w.interventions.text()
    assert not w.interventions.isHidden()
    assert "Heads masked: 1:0, 2:3 ×0.5; from position 7: 1:0" in text  # change before generated token 2
    assert "Hidden from attention: positions 2–3" in text
    assert "Next run" not in text
    w.attention.mask_heads([(0, 0)], 0.0)
    assert "Next run's head mask: 0:0, 1:0" in w.interventions.text()


def test_right_click_opens_the_mask_menu_for_what_is_under_the_mouse(qtbot, view):
    grid = view.grid
    qtbot.waitUntil(lambda: grid.view.width() > 50)
    widget_pt = grid.plot.mapFromScene(grid.view.mapViewToScene(QPointF(3, 0)))
    shown = capture_next_menu()
    with qtbot.assertNotEmitted(view.head_mask_changed):
        qtbot.mouseClick(grid.plot.viewport(), Qt.MouseButton.RightButton, pos=widget_pt)
        qtbot.waitUntil(lambda: bool(shown), timeout=2000)
    assert shown[0][:3] == ["Ablate head L0H3", "Ablate layer 0", "Ablate head 3 in every layer"]
