"""The window with its engine in a child process (what `opt-desktop` runs): a run streams in, and when
the engine process dies the window and its session survive, say so in one line, and can restart it."""

import os
import signal

from opt_desktop.engine import GenerationSettings, LoadRequest
from opt_desktop.engine.process.engine_process import EngineProcess
from opt_desktop.gui.app_state import AppState
from opt_desktop.gui.controller import Controller
from opt_desktop.gui.main_window import MainWindow
from opt_desktop.gui import session_dialogs
from opt_desktop.presets import PresetStore
from window_driver import finished, run_until


def test_a_dead_engine_process_leaves_the_session_and_offers_a_restart(qtbot, loop, tmp_path, monkeypatch):
    monkeypatch.setattr(session_dialogs, "ask_unsaved", lambda parent, name, running=False: "discard")
    w = MainWindow(controller=Controller(EngineProcess()), state=AppState(), presets=PresetStore(tmp_path / "p"))
    qtbot.addWidget(w)
    w.show()
    w.models.load(LoadRequest(source="demo", device="cpu"))
    run_until(loop, lambda: w.controller.model is not None and not w.controller.is_loading, timeout=120)
    w.settings_panel.set_settings(GenerationSettings(max_new_tokens=5))
    w.prompt.set_text("Across the pipe")
    w.runs.generate()
    run_until(loop, finished(w), timeout=120)
    first = w.presenter.trace
    assert first.n_generated == first.finished.n_tokens >= 1 and w.output.toPlainText() == first.text
    run_until(loop, lambda: w.prompt.token_count() is not None)  # counted by the engine process
    assert w.model_bar.mode_problem() is None

    # A long run, then the engine process is killed (as the kernel does when memory runs out).
    w.settings_panel.set_settings(GenerationSettings(max_new_tokens=450, do_sample=True, seed=2))
    w.runs.generate()
    run_until(loop, lambda: len(w.keeper.session.runs) == 2 and w.presenter.trace.n_generated >= 2, timeout=120)
    os.kill(w.controller.engine.pid, signal.SIGKILL)
    run_until(loop, lambda: any("stopped unexpectedly" in t for t in w.banner.texts()) and w.runs.in_flight == 0)
    line = next(t for t in w.banner.texts() if "stopped unexpectedly" in t)
    assert "\n" not in line and "session is safe" in line
    assert [r.finished.reason for r in w.keeper.session.runs] == [first.finished.reason, "error"]  # both kept
    assert w.keeper.session.runs[0] is first and w.controller.model is None

    restart = next(b for b in w.banner.buttons if b.text() == "Restart the engine")
    restart.click()
    run_until(loop, lambda: w.controller.model is not None and not w.controller.is_loading, timeout=120)
    w.settings_panel.set_settings(GenerationSettings(max_new_tokens=3))
    w.runs.generate()
    run_until(loop, lambda: len(w.keeper.session.runs) == 3 and finished(w)(), timeout=120)
    assert w.presenter.trace.finished.reason in ("length", "eos") and w.presenter.trace.n_generated >= 1
    w.close()
