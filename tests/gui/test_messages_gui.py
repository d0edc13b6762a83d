"""Messages stay until the person deals with them: a model finishing its load clears none of them."""

import psutil

from opt_desktop.gui.app import build_parser, start
from opt_desktop.gui.app_state import AppState
from opt_desktop.session.autosave import Autosave
from opt_desktop.session.session import Session
from fakes import fake_trace
from window_driver import new_window, run_until


def _dead_pid() -> int:
    pid = 4_000_000
    while psutil.pid_exists(pid):
        pid += 1
    return pid


def _loaded(w):
    return lambda: w.controller.model is not None and not w.controller.is_loading


def test_the_recovery_offer_outlives_the_model_load_and_restores(qtbot, loop, tmp_path, monkeypatch):
    folder = tmp_path / "autosave"
    trace = fake_trace()
    Autosave(folder, pid=_dead_pid()).save(Session([trace]))
    w = new_window(qtbot, tmp_path, monkeypatch)
    w.keeper.autosave = Autosave(folder)
    start(w, build_parser().parse_args(["--model", "demo"]), AppState())
    run_until(loop, _loaded(w))
    run_until(loop, lambda: False if w.controller.is_busy else True)
    assert any("did not close properly" in t for t in w.banner.texts())  # still there after the load
    next(b for b in w.banner.buttons if b.text() == "Restore").click()
    run_until(loop, lambda: w.presenter.trace is not None)  # read off the GUI thread
    assert w.presenter.trace.token_ids == trace.token_ids
    assert not any("did not close properly" in t for t in w.banner.texts())  # dealt with: gone
    w.close()


def test_a_broken_file_on_the_command_line_says_why_and_stays(qtbot, loop, tmp_path, monkeypatch):
    broken = tmp_path / "notes.optsession"
    broken.write_text("this is a text file, renamed")
    w = new_window(qtbot, tmp_path, monkeypatch)
    start(w, build_parser().parse_args([str(broken), "--model", "demo"]), AppState())
    run_until(loop, _loaded(w))
    run_until(loop, lambda: any("notes.optsession" in t for t in w.banner.texts()))
    line = next(t for t in w.banner.texts() if "notes.optsession" in t)
    assert "\n" not in line and w.keeper.session.runs == []
    w.close()


def test_messages_stack_and_each_is_dismissed_on_its_own(qtbot, loop, tmp_path, monkeypatch):
    w = new_window(qtbot, tmp_path, monkeypatch)
    w.banner.show_error("first <b>problem</b> &amp; more")
    w.banner.show_notice("second")
    assert w.banner.texts() == ["first <b>problem</b> &amp; more", "second"]
    assert w.banner.messages[0].label.text() == "first <b>problem</b> &amp; more"  # shown as typed, not as HTML
    w.banner.messages[0].dismiss()
    assert w.banner.texts() == ["second"]
    w.close()
