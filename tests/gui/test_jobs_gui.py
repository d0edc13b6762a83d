"""Jobs seen from the window: one run per press, origins that do not leak, errors kept and logged,
Generate during a load, and the autosave written before "finished" shows (closing during a run:
test_quit_during_a_run.py)."""

import asyncio
import dataclasses
import logging
import sys

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from opt_desktop.engine import GenerationSettings, LoadRequest
from opt_desktop.logs import log_file, setup_logging
from opt_desktop.session.file import load_session
from window_driver import finished, generate, new_window, run_until


def test_twenty_presses_while_the_loop_is_blocked_make_exactly_one_run(make_window, loop, monkeypatch):
    w = make_window()
    errors = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: errors.append(exc))
    w.settings_panel.set_settings(GenerationSettings(max_new_tokens=6))
    w.prompt.set_text("Press me")
    w.activateWindow()
    # No event-loop turn between the presses: exactly what 20 clicks queued behind a busy GUI thread are.
    for _ in range(20):
        w.generate_button.click()
    for _ in range(20):
        QTest.keyClick(w.prompt.edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    run_until(loop, finished(w))
    loop.run_until_complete(asyncio.sleep(0.3))  # anything still queued would have started by now
    assert len(w.keeper.session.runs) == 1 and errors == []
    assert w.presenter.trace.finished.reason in ("length", "eos")


def test_a_rerun_whose_model_fails_to_load_leaves_no_label_behind(make_window, loop, tmp_path):
    w = make_window()
    first = generate(w, loop)
    # The run "was made" with a model that is gone now: re-running it must load that model, and fails.
    first.started = dataclasses.replace(first.started,
                                        model=dataclasses.replace(first.started.model, source=str(tmp_path / "gone")))
    w.runs.rerun()
    run_until(loop, lambda: "No such folder" in " ".join(w.banner.texts()) and not w.controller.is_busy)
    w.models.load(LoadRequest(source="demo", device="cpu"))
    run_until(loop, lambda: w.controller.model is not None and not w.controller.is_loading)
    w.runs.generate()
    run_until(loop, lambda: len(w.keeper.session.runs) == 2 and finished(w)())
    assert w.keeper.session.runs[1].label == ""  # a plain run, not "re-run of #1"


def test_a_failure_inside_capture_is_kept_as_error_logged_and_one_line(make_window, loop, monkeypatch):
    from opt_desktop.engine.running import capture

    real = capture.Capture.take_step
    calls = []

    def failing(self, start):
        calls.append(start)
        if len(calls) == 3:
            raise ValueError("a statistic came out wrong")
        return real(self, start)

    monkeypatch.setattr(capture.Capture, "take_step", failing)
    w = make_window()
    setup_logging()  # into this window's log folder (its OPT_DESKTOP_HOME)
    trace = generate(w, loop, settings=GenerationSettings(max_new_tokens=10))
    assert trace.finished.reason == "error" and trace.n_generated == 2  # what it made before is kept
    line = w.banner.text()
    assert "a statistic came out wrong" in line and "\n" not in line and "ValueError" not in line
    message = w.banner.messages[-1]
    assert "Traceback" in message.details and "failing" in message.details  # the Details… button's text
    for handler in logging.getLogger("opt_desktop").handlers:
        handler.flush()
    logged = log_file().read_text(encoding="utf-8")
    assert "a statistic came out wrong" in logged and "Traceback" in logged and "take_step" in logged
    # ...and saved as such in the file.
    w.keeper.wait_for_files(10)
    saved = load_session(w.keeper.autosave.path).runs[0]
    assert saved.finished.reason == "error" and "a statistic came out wrong" in saved.finished.message


def test_generate_during_a_load_starts_when_the_load_ends(qtbot, loop, tmp_path, monkeypatch, engine_kind, borrow):
    w = new_window(qtbot, tmp_path, monkeypatch, borrow(engine_kind))
    w.models.load(LoadRequest(source="demo", device="cpu"))
    assert w.controller.is_loading
    w.settings_panel.set_settings(GenerationSettings(max_new_tokens=4))
    w.prompt.set_text("Waiting")
    w.runs.generate()
    assert "starts as soon as it has loaded" in w.statusBar().currentMessage()
    run_until(loop, finished(w), timeout=120)
    assert len(w.keeper.session.runs) == 1 and w.presenter.trace.n_generated == 4
    w.close()


def test_the_autosave_is_on_disk_before_the_run_shows_finished(make_window, loop):
    w = make_window()
    seen = []
    shown = w.presenter.run_finished

    def on_finished(trace):
        path = w.keeper.autosave.path
        seen.append(path.is_file() and [r.token_ids for r in load_session(path).runs] == [trace.token_ids])
        shown(trace)

    w.presenter.run_finished = on_finished
    generate(w, loop, settings=GenerationSettings(max_new_tokens=5))
    assert seen == [True]
