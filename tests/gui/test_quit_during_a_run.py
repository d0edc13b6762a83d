"""Quitting while a run generates: the question comes first, and nothing stops until the person has
chosen to quit. Cancel lets the run go on; Discard stops it and closes at once; Save stops it, saves
what it made, then closes."""

import time

from opt_desktop.engine import GenerationSettings
from opt_desktop.gui import session_dialogs
from opt_desktop.session.file import load_session
from window_driver import load_demo, new_window, run_until

LONG = GenerationSettings(max_new_tokens=450, do_sample=True, seed=3)


def start_long_run(w, loop):
    w.settings_panel.set_settings(LONG)
    w.prompt.set_text("Go on and on")
    w.runs.generate()
    run_until(loop, lambda: w.presenter.trace is not None and w.presenter.trace.n_generated >= 2)
    return w.presenter.trace


def answering(monkeypatch, w, answer):
    """ask_unsaved answers `answer`; the list records, per question, whether the run was still going."""
    asked = []

    def ask(parent, name, running=False):
        asked.append((running, w.controller.is_running, w.presenter.trace.finished))
        return answer

    monkeypatch.setattr(session_dialogs, "ask_unsaved", ask)
    return asked


def test_cancel_leaves_the_run_going(make_window, loop, monkeypatch):
    w = make_window()
    trace = start_long_run(w, loop)
    asked = answering(monkeypatch, w, "cancel")
    w.close()  # Ctrl+Q runs the same close
    assert asked == [(True, True, None)]  # asked while the run went on, and told that it does
    assert w.isVisible() and w.controller.is_running and trace.finished is None
    made = trace.n_generated
    run_until(loop, lambda: trace.n_generated > made + 3)  # it goes on after the answer
    assert trace.finished is None
    w.runs.stop()
    run_until(loop, lambda: trace.finished is not None and not w.controller.is_busy)
    assert trace.finished.reason == "cancelled"
    monkeypatch.setattr(session_dialogs, "ask_unsaved", lambda parent, name, running=False: "discard")
    w.close()
    assert not w.isVisible()


def test_discard_stops_the_run_and_closes_promptly(qtbot, loop, tmp_path, monkeypatch, engine_kind):
    w = new_window(qtbot, tmp_path, monkeypatch, engine_kind)  # an engine process of its own: closing ends it
    load_demo(w, loop)
    start_long_run(w, loop)
    asked = answering(monkeypatch, w, "discard")
    threads = list(w.controller.engine.threads)
    t0 = time.monotonic()
    w.close()
    assert time.monotonic() - t0 < 1.5
    assert asked == [(True, True, None)]
    assert not w.isVisible() and not any(t.is_alive() for t in threads)


def test_save_stops_the_run_saves_what_it_made_then_closes(make_window, loop, monkeypatch, tmp_path):
    w = make_window()
    trace = start_long_run(w, loop)
    asked = answering(monkeypatch, w, "save")
    path = tmp_path / "kept.optsession"
    monkeypatch.setattr(session_dialogs, "choose_save_path", lambda parent, suggested: path)
    w.close()
    assert asked == [(True, True, None)]
    run_until(loop, lambda: not w.isVisible())  # saved off the GUI thread, then closed
    (saved,) = load_session(path).runs
    assert saved.finished.reason == "cancelled" and saved.token_ids == trace.token_ids
    assert saved.n_generated >= 2
