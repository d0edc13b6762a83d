"""The whole window, driven as a person would, on a real qasync loop with the demo model."""

import asyncio
import subprocess
import sys
import time

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from opt_desktop.engine import EngineService, GenerationRequest, GenerationSettings, LoadRequest
from opt_desktop.gui.app_state import AppState
from opt_desktop.session import RunTrace
from window_driver import BOTH_ENGINES, finished, new_window, run_until
from worker_patches import ENDLESS_DOWNLOAD, endless_download

SEEDED = GenerationSettings(max_new_tokens=24, do_sample=True, temperature=1.0, top_k=0, seed=7)


def assert_closes_promptly(window):
    """Closing stops the window's own worker (other tests' engines don't count) within 2 s."""
    threads = list(window.controller.engine.threads)
    assert threads  # the worker was really running
    t0 = time.monotonic()
    window.close()
    assert time.monotonic() - t0 < 2.0
    assert [t for t in threads if t.is_alive()] == []


def reference_run(prompt, settings):
    svc = EngineService()
    try:
        svc.load(LoadRequest(source="demo", device="cpu")).result()
        events = []
        svc.generate(GenerationRequest(prompt=prompt, settings=settings), events.append).result()
    finally:
        svc.shutdown()
    trace = RunTrace(events[0])
    for e in events[1:]:
        trace.apply(e)
    return trace


@BOTH_ENGINES
def test_generate_matches_the_engine(window, loop):
    window.settings_panel.set_settings(SEEDED)
    QTest.keyClicks(window.prompt.edit, "The weather today is")
    QTest.keyClick(window.prompt.edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)  # Ctrl+Enter
    run_until(loop, finished(window))
    assert window.prompt.text() == "The weather today is"  # Ctrl+Enter did not type a newline

    ref = reference_run("The weather today is", SEEDED)
    trace = window.presenter.trace
    assert trace.token_ids == ref.token_ids
    assert window.output.toPlainText() == ref.text
    window.tabs.setCurrentWidget(window.inspector)
    model = window.inspector.table.model
    assert model.rowCount() == ref.length
    for pos in range(1, ref.length):
        assert model.raw(pos, 2) == ref.token_ids[pos]
        assert model.raw(pos, 3) == pytest.approx(float(np.exp(ref.logprob[pos])), rel=1e-5)
        assert model.raw(pos, 4) == ref.rank[pos]
        assert model.raw(pos, 5) == pytest.approx(float(ref.entropy[pos]), rel=1e-5)
    assert "finished" in window.run_status.reason.text()
    assert window.run_status.tokens.text() == f"{ref.n_generated} tokens"


@BOTH_ENGINES
def test_stop_keeps_the_partial_result(window, loop):
    window.settings_panel.set_settings(GenerationSettings(max_new_tokens=450, do_sample=True, seed=1))
    window.prompt.set_text("Once upon a time")
    window.generate_button.click()
    run_until(loop, lambda: window.presenter.trace is not None and window.presenter.trace.n_generated >= 3)
    assert window.stop_button.isEnabled() and not window.generate_button.isEnabled()
    QTest.keyClick(window, Qt.Key.Key_Escape)
    run_until(loop, finished(window))
    trace = window.presenter.trace
    assert trace.finished.reason == "cancelled"
    assert 3 <= trace.n_generated < 450
    assert window.output.toPlainText() == trace.text
    assert "stopped" in window.run_status.reason.text()
    assert window.generate_button.isEnabled() and not window.stop_button.isEnabled()


@BOTH_ENGINES
def test_failed_load_shows_a_message_and_the_window_still_works(window, loop, tmp_path):
    missing = tmp_path / "no-such-model"
    window.models.load(LoadRequest(source=str(missing)))
    run_until(loop, lambda: window.banner.isVisible())
    assert window.banner.text() == f"No such folder: {missing}"
    assert window.controller.model is not None  # the demo model is still there
    window.banner.dismiss()
    window.prompt.set_text("Still alive")
    window.settings_panel.set_settings(GenerationSettings(max_new_tokens=4))
    window.runs.generate()
    run_until(loop, finished(window))
    assert window.presenter.trace.n_generated == 4


def test_unreachable_model_at_start_falls_back_to_demo(qtbot, loop, tmp_path, monkeypatch, engine_kind, borrow):
    w = new_window(qtbot, tmp_path, monkeypatch, borrow(engine_kind))
    w.models.load(LoadRequest(source="facebook/opt-not-cached-anywhere"), fallback_to_demo=True)
    # until the fallback has said so (a shared engine process may hold the demo from an earlier test)
    run_until(loop, lambda: w.controller.model is not None and not w.controller.is_loading and w.banner.texts(),
              timeout=120)
    assert w.controller.model.source == "demo" and not w.controller.model.random_weights
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in w.banner.text() and "demo model" in w.banner.text()
    # What loaded is what the next start begins with: the offline message does not come back every time.
    assert AppState.load().last_model.source == "demo"
    w.close()


def test_stopping_the_start_up_load_loads_nothing_instead(qtbot, loop, tmp_path, monkeypatch, engine_kind):
    """Issue 23 (1): a stopped load ended as an error, so the start-up load's fallback loaded the demo
    ("Loading … was cancelled. Loaded the built-in demo model instead…")."""
    if engine_kind == "thread":
        endless_download(monkeypatch.setattr)
    w = new_window(qtbot, tmp_path, monkeypatch, engine_kind, command=ENDLESS_DOWNLOAD)
    w.models.load(LoadRequest(source="facebook/opt-125m"), fallback_to_demo=True)
    run_until(loop, lambda: w.model_bar.status_label.text().startswith("Downloading"), timeout=120)
    QTest.keyClick(w, Qt.Key.Key_Escape)  # Stop
    run_until(loop, lambda: not w.controller.is_loading)
    loop.run_until_complete(asyncio.sleep(0.5))  # a fallback load would have been asked for by now
    assert w.controller.model is None and not w.controller.is_busy
    assert w.banner.texts() == ["Loading facebook/opt-125m was stopped; no model is loaded."]
    w.close()


def test_bad_settings_show_a_message(window, loop, monkeypatch):
    from opt_desktop.engine import SettingsError

    def broken():
        raise SettingsError("top_p: must be in (0, 1], got 2.0")

    monkeypatch.setattr(window.settings_panel, "settings", broken)
    window.runs.generate()
    assert window.banner.text() == "Cannot generate: top_p: must be in (0, 1], got 2.0"
    assert window.presenter.trace is None


def test_prompt_too_long_is_refused_with_a_message(window, loop):
    window.prompt.set_text("word " * 600)
    window.runs.generate()
    run_until(loop, lambda: window.banner.isVisible() and not window.controller.is_running)
    assert f"reads at most {window.controller.model.context_length}" in window.banner.text()


def test_clicking_a_token_selects_it_in_the_inspector_with_its_lens(window, loop):
    window.settings_panel.set_settings(GenerationSettings(max_new_tokens=6))
    window.prompt.set_text("Hello there")
    window.runs.generate()
    run_until(loop, finished(window))
    trace = window.presenter.trace
    pos = trace.n_prompt + 2
    start, _ = window.output.span(pos)
    cursor = window.output.textCursor()
    cursor.setPosition(start + 1 if window.output.span(pos)[1] > start + 1 else start)
    rect = window.output.cursorRect(cursor)
    QTest.mouseClick(window.output.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     rect.center())
    assert window.tabs.currentWidget() is window.inspector
    assert window.inspector.selected_position() == pos
    window.inspector.tabs.setCurrentWidget(window.inspector.lens)
    run_until(loop, lambda: window.inspector._lens_state == ("result", pos))
    svc_lens = window.controller.engine.logit_lens(trace.residual_rows(pos), trace.next_token(pos), pos).result()
    table = window.inspector.lens.table
    assert table.rowCount() == trace.n_layers + 1
    shown = table.item(table.rowCount() - 1, 0).text()
    assert svc_lens.top_pieces[-1][0].strip() in shown


def test_continue_appends_to_the_output(window, loop):
    window.settings_panel.set_settings(GenerationSettings(max_new_tokens=5))
    window.prompt.set_text("Hello")
    window.runs.generate()
    run_until(loop, finished(window))
    first = window.presenter.trace
    window.continue_button.click()
    run_until(loop, lambda: window.presenter.trace is not first and finished(window)())
    second = window.presenter.trace
    assert second.token_ids[: first.length] == first.token_ids
    assert second.n_generated == 5
    assert window.output.toPlainText().endswith(first.text + second.text)


def test_closing_mid_generation_leaves_no_thread(qtbot, loop, tmp_path, monkeypatch):
    w = new_window(qtbot, tmp_path, monkeypatch)
    w.models.load(LoadRequest(source="demo", device="cpu"))
    run_until(loop, lambda: w.controller.model is not None)
    w.settings_panel.set_settings(GenerationSettings(max_new_tokens=450))
    w.prompt.set_text("Keep going")
    w.runs.generate()
    run_until(loop, lambda: w.presenter.trace is not None and w.presenter.trace.n_generated >= 2)
    assert_closes_promptly(w)


def test_closing_while_loading_leaves_no_thread(qtbot, loop, tmp_path, monkeypatch):
    w = new_window(qtbot, tmp_path, monkeypatch)
    w.models.load(LoadRequest(source="demo", device="cpu"))
    run_until(loop, lambda: w.controller.is_loading)
    assert_closes_promptly(w)


def test_generate_without_a_model_says_what_to_do(qtbot, loop, tmp_path, monkeypatch):
    w = new_window(qtbot, tmp_path, monkeypatch)
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow)  # window shortcuts need an active window
    w.prompt.set_text("Hello")
    QTest.keyClick(w.prompt.edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert w.banner.text() == "No model is loaded yet: choose one in the bar above and press Load."
    assert w.presenter.trace is None
    w.close()


def test_last_model_is_remembered(window, loop, tmp_path):
    assert AppState.load().last_model.source == "demo"


def test_window_appears_before_torch_is_imported(tmp_path):
    code = (
        "import os, sys\n"
        "os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
        f"os.environ['OPT_DESKTOP_HOME'] = {str(tmp_path)!r}\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from opt_desktop.gui.main_window import MainWindow\n"
        "w = MainWindow()\n"
        "w.show()\n"
        "app.processEvents()\n"
        "print(w.isVisible(), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]
