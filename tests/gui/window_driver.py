"""Driving the whole window as a person would, on a real qasync loop (the fixtures are in conftest.py)."""

import asyncio
import time

import pytest

from opt_desktop.engine import GenerationSettings, LoadRequest
from opt_desktop.engine.process.engine_process import EngineProcess
from opt_desktop.gui import session_dialogs
from opt_desktop.gui.app_state import AppState
from opt_desktop.gui.controller import Controller
from opt_desktop.gui.main_window import MainWindow
from opt_desktop.presets import PresetStore

SEEDED = GenerationSettings(max_new_tokens=12, do_sample=True, top_k=0, seed=11)

# The tests that drive jobs run against both engines: the one in this process, and the engine
# process the app ships (shared between tests, see borrowed_engine.py). The `window` and
# `make_window` fixtures take the engine by indirect parametrization.
ENGINES = ["thread", "process"]
BOTH_ENGINES = pytest.mark.parametrize("window", ENGINES, indirect=True)


def run_until(loop, predicate, timeout=60.0):
    async def wait():
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            await asyncio.sleep(0.02)

    loop.run_until_complete(wait())


def new_window(qtbot, tmp_path, monkeypatch, engine=None, command: list[str] | None = None) -> MainWindow:
    """A fresh window whose remembered state and presets live in tmp_path. Its engine: its own in
    this process (None or "thread"), its own engine process ("process", started with `command` if
    given), or the one given (conftest's `borrow`)."""
    monkeypatch.setenv("OPT_DESKTOP_HOME", str(tmp_path / "home"))
    # Closing a window with unsaved runs asks; tests that don't care answer "discard".
    monkeypatch.setattr(session_dialogs, "ask_unsaved", lambda parent, name, running=False: "discard")
    if engine == "process":
        engine = EngineProcess(command=command)
    controller = Controller(engine) if engine not in (None, "thread") else None
    w = MainWindow(controller=controller, state=AppState(), presets=PresetStore(tmp_path / "presets"))
    qtbot.addWidget(w)
    w.show()
    return w


def load_demo(w, loop) -> None:
    w.models.load(LoadRequest(source="demo", device="cpu"))
    # generous: an engine process shared with other tests may be starting (torch's import in it)
    run_until(loop, lambda: w.controller.model is not None and not w.controller.is_loading, timeout=120)


def finished(w):
    """The shown run has ended, is autosaved and is shown as finished."""
    return lambda: w.presenter.trace is not None and w.presenter.trace.finished is not None \
        and not w.controller.is_running and w.runs.in_flight == 0


def generate(w, loop, prompt="The cat sat", settings=SEEDED):
    w.settings_panel.set_settings(settings)
    w.prompt.set_text(prompt)
    w.runs.generate()
    run_until(loop, finished(w))
    return w.presenter.trace
