"""HeadImportanceView: the delta heatmap (partial results included), progress, start and stop."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from opt_desktop.engine.messages.results import HeadImportance
from opt_desktop.gui.widgets.head_importance_view import HeadImportanceView

L, H = 3, 4


@pytest.fixture
def view(qtbot):
    v = HeadImportanceView()
    qtbot.addWidget(v)
    v.resize(700, 500)
    v.show()
    qtbot.waitExposed(v)
    return v


def partial_delta() -> np.ndarray:
    delta = np.full((L, H), np.nan, np.float32)
    delta[0] = [-1.25, 0.5, 0.0, -0.1]
    delta[1, :2] = [2.0, -3.0]
    return delta


def test_result_is_drawn_centred_on_zero_with_blanks_for_heads_not_done(view):
    delta = partial_delta()
    view.set_result(HeadImportance(delta=delta, baseline_logprob=-20.5, completed=False))
    np.testing.assert_array_equal(view.heatmap.data(), delta, strict=True)
    np.testing.assert_array_equal(view.heatmap.image_item.image, delta)
    assert view.heatmap.colorbar.levels() == (-3.0, 3.0)  # symmetric: white is "no effect"
    assert view.heatmap.describe(0, 0) == "L0H0 (layer 0, head 0): Δ log p = -1.25"
    assert view.heatmap.describe(2, 3) == "L2H3 (layer 2, head 3): not computed yet"
    status = view.status.text()
    assert "stopped: 6 of 12 heads measured" in status
    assert "Most needed: L1H1 (layer 1, head 1) (Δ log p = -3)" in status and "-20.500" in status

    done = np.nan_to_num(delta, nan=0.25)
    view.set_result(HeadImportance(delta=done, baseline_logprob=-20.5, completed=True, scale=0.5))
    assert "stopped" not in view.status.text() and "scaling by ×0.5" in view.status.text()
    view.set_result(None)
    assert view.heatmap.data().size == 0


def test_progress(view):
    view.set_progress(5, 12)
    assert (view.progress.value(), view.progress.maximum()) == (5, 12)
    assert view.progress.text() == "5 / 12 heads"
    view.set_progress(12, 12)
    assert view.progress.value() == 12


def test_start_and_stop(view, qtbot):
    view.set_available(False, "Load demo (float32) to measure head importance on this run.")
    assert not view.start_button.isEnabled() and not view.stop_button.isEnabled()
    assert view.reason.text() == "Load demo (float32) to measure head importance on this run."
    view.set_available(True, "")
    assert view.start_button.isEnabled() and view.reason.isHidden()
    view.scale_spin.setValue(0.5)
    with qtbot.waitSignal(view.run_requested, timeout=1000) as blocker:
        view.start_button.click()
    assert blocker.args == [0.5]
    view.set_running(True)
    assert not view.start_button.isEnabled() and view.stop_button.isEnabled()
    assert not view.scale_spin.isEnabled()
    view.set_result(HeadImportance(delta=partial_delta(), baseline_logprob=-1.0, completed=False))
    assert "6 of 12 heads so far" in view.status.text()
    with qtbot.waitSignal(view.stop_requested, timeout=1000):
        view.stop_button.click()
    view.set_running(False)
    assert view.start_button.isEnabled() and not view.stop_button.isEnabled()
    assert "stopped: 6 of 12" in view.status.text()


def test_clicking_a_head_emits_it(view, qtbot):
    view.set_result(HeadImportance(delta=partial_delta(), baseline_logprob=-1.0, completed=False))
    hm = view.heatmap
    qtbot.waitUntil(lambda: hm.view.viewRange()[0][1] >= H - 0.5)  # the view has ranged over the new map
    point = hm.plot.mapFromScene(hm.view.mapViewToScene(QPointF(3, 1)))  # head 3, layer 1 (0-based)
    with qtbot.waitSignal(view.head_clicked, timeout=1000) as blocker:
        qtbot.mouseClick(hm.plot.viewport(), Qt.MouseButton.LeftButton, pos=point)
    assert blocker.args == [1, 3]


def test_before_start_a_sentence_with_the_real_head_count_not_an_empty_map(view):
    # Nothing measured yet: no "0 / 1 heads", no empty map under a 0–1 colour bar.
    assert view.pages.currentWidget() is view.placeholder
    assert not view.heatmap.isVisible()  # and so neither its colour bar
    assert not view.progress.isVisible()
    assert "Press Start" in view.placeholder.text()
    view.set_model_shape((12, 12))  # the shown run's model, opt-125m
    assert "each of the 144 heads (12 layers × 12 heads)" in view.placeholder.text()
    assert view.progress.maximum() == 144  # when it shows, it counts the real heads

    view.set_running(True)
    assert view.progress.isVisible() and view.progress.text() == "0 / 144 heads"
    view.set_progress(5, 144)
    assert "5 of 144" in view.placeholder.text()
    assert view.pages.currentWidget() is view.placeholder  # the map comes with the result

    view.set_running(False)
    delta = np.zeros((12, 12), np.float32)
    delta[3, 4] = -2.0
    view.set_result(HeadImportance(delta=delta, baseline_logprob=-5.0, completed=True))
    assert view.pages.currentWidget() is view.heatmap
    assert view.heatmap.isVisible()
    assert view.progress.isVisible() and view.status.isVisible()

    view.set_result(None)  # another run, nothing measured on it
    assert view.pages.currentWidget() is view.placeholder and not view.progress.isVisible()
    view.set_model_shape(None)
    assert "each head " in view.placeholder.text()
