"""Run > CPU threads: the choice is remembered in the settings file and reaches the engine's worker."""

import json

import torch

from opt_desktop.gui.app_state import AppState, state_path
from opt_desktop.gui.main_window import MainWindow
from opt_desktop.gui.widgets.threads_menu import thread_counts
from opt_desktop.presets import PresetStore
from window_driver import run_until


def test_the_setting_round_trips_through_the_settings_file():
    state = AppState()
    assert state.threads == "auto"
    state.threads = 3
    state.save()
    assert json.loads(state_path().read_text())["threads"] == 3
    assert AppState.load().threads == 3
    state.threads = "auto"
    state.save()
    assert AppState.load().threads == "auto"


def test_a_damaged_threads_setting_falls_back_to_auto_and_says_so():
    state_path().parent.mkdir(parents=True, exist_ok=True)
    state_path().write_text(json.dumps({"threads": 0, "recent_sources": ["a"]}))
    state = AppState.load()
    assert state.threads == "auto" and state.recent_sources == ["a"]
    assert any("threads" in note for note in state.notes)


def test_thread_counts_offered():
    assert thread_counts(1) == [1]
    assert thread_counts(4) == [1, 2, 3, 4]
    assert thread_counts(48) == [1, 2, 4, 8, 16, 32, 48]


def _engine_threads(window) -> int:
    return window.controller.engine.call(lambda _: torch.get_num_threads()).result(timeout=30)


def test_the_menu_sets_the_engines_threads_and_remembers_them(qtbot, tmp_path, loop):
    state = AppState()
    state.threads = 1
    window = MainWindow(state=state, presets=PresetStore(tmp_path / "presets"))
    qtbot.addWidget(window)
    menu = window.threads_menu
    run_menu = window.menuBar().actions()[1].menu()
    assert run_menu.title() == "&Run" and menu.menuAction() in run_menu.actions()
    assert menu.setting == 1
    run_until(loop, lambda: not window.controller.jobs("threads"))
    assert _engine_threads(window) == 1  # the remembered setting was sent as the window started
    assert not window.controller.is_busy  # setting threads never makes the window busy
    automatic = next(a for a in menu.actions() if a.text().startswith("&Automatic"))
    automatic.trigger()
    assert menu.setting == "auto" and AppState.load().threads == "auto"
    assert window.controller.jobs("threads")  # sent to the engine
    run_until(loop, lambda: not window.controller.jobs("threads"))
    window.set_threads(2)  # what choosing "2 threads" does (a 1-core machine's menu lists only 1)
    run_until(loop, lambda: not window.controller.jobs("threads"))
    assert menu.setting == 2 and _engine_threads(window) == 2 and AppState.load().threads == 2
    window.close()
