"""A layout made for looking: the side panels can be hidden so the views fill the window, the prompt
can shrink to a few lines, and the arrangement is remembered between starts."""

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from opt_desktop.gui.app_state import AppState
from opt_desktop.gui.main_window import MainWindow
from opt_desktop.presets import PresetStore
from window_driver import new_window


def test_views_only_lets_the_inspector_fill_the_window(qtbot, loop, tmp_path, monkeypatch):
    w = new_window(qtbot, tmp_path, monkeypatch)
    w.resize(1300, 850)
    w.tabs.setCurrentWidget(w.inspector)
    qtbot.waitExposed(w)
    before = w.inspector.width() * w.inspector.height()
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow)
    QTest.keyClick(w, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: not any(d.isVisible() for d in w.docks))
    QTest.qWait(50)
    area = w.inspector.width() * w.inspector.height()
    assert area > 1.6 * before and w.inspector.width() > 0.9 * w.width()
    assert w.prompt.minimumHeight() <= 80  # the prompt can shrink to a few lines
    w.close()


def test_the_arrangement_is_remembered(qtbot, loop, tmp_path, monkeypatch):
    w = new_window(qtbot, tmp_path, monkeypatch)
    w.runs_dock.hide()
    w.resize(1111, 777)
    w.close()  # remembered in the state file
    state = AppState.load()
    assert state.window_layout and state.window_geometry
    again = MainWindow(state=state, presets=PresetStore(tmp_path / "presets"))
    qtbot.addWidget(again)
    again.show()
    assert not again.runs_dock.isVisible() and again.settings_dock.isVisible()
    assert again.width() > 1000  # the size came back too (the offscreen screen may trim it a little)
    again.close()
