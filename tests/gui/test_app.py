"""Starting the app: command line, application identity, a session file to open, and the first run offline."""

import asyncio
import subprocess
import sys
import time

import pytest
import qasync
from PySide6.QtCore import QObject, QTimer, Signal

from opt_desktop.engine import LoadRequest
from opt_desktop.gui import app as app_module
from opt_desktop.gui.app import build_parser, configure_application, initial_request, start
from opt_desktop.gui.app_state import AppState


class FakeWindow(QObject):
    """Records what the start-up does to the window, in order."""

    closed = Signal()

    def __init__(self, close_when_shown=False):
        super().__init__()
        self.calls = []
        self.close_when_shown = close_when_shown
        self.controller = type("C", (), {"engine": type("E", (), {"join": staticmethod(lambda timeout: True)})()})()
        self.keeper = type("K", (), {"wait_for_files": staticmethod(lambda timeout=None: True)})()

    def show(self):
        self.calls.append(("show",))
        if self.close_when_shown:
            QTimer.singleShot(0, self.closed.emit)

        calls = self.calls
        self.models = type("M", (), {"load": lambda _, request, fallback_to_demo=False:
                                     calls.append(("load_model", request, fallback_to_demo))})()
        self.sessions = type("S", (), {
            "open_file": lambda _, path: calls.append(("open_session_file", path)),
            "check_recovery": lambda _: calls.append(("check_recovery",))})()


def test_parser_takes_a_session_file_and_every_precision():
    args = build_parser().parse_args(["runs/today.optsession", "--dtype", "int8"])
    assert args.file == "runs/today.optsession" and args.dtype == "int8"
    assert build_parser().parse_args([]).file is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--install-desktop-entry", "--uninstall-desktop-entry"])


def test_a_session_file_opens_after_the_window_shows_and_the_model_still_loads(tmp_path):
    last = LoadRequest(source="facebook/opt-350m", dtype="float16")
    window = FakeWindow()
    start(window, build_parser().parse_args([str(tmp_path / "a.optsession")]), AppState(last_model=last))
    assert window.calls == [("show",), ("load_model", last, True),
                            ("open_session_file", tmp_path / "a.optsession")]


def test_no_file_opens_nothing_but_offers_recovery():
    window = FakeWindow()
    start(window, build_parser().parse_args(["--model", "demo"]), AppState())
    assert window.calls == [("show",), ("load_model", LoadRequest(source="demo"), False), ("check_recovery",)]


def test_first_run_offers_opt_125m():
    request, auto = initial_request(build_parser().parse_args([]), AppState())
    assert request.source == "facebook/opt-125m" and auto  # falls back to the demo if it cannot load


def test_application_identity(qapp):
    configure_application(qapp)
    assert qapp.desktopFileName() == "opt-desktop"
    assert qapp.applicationName() == "OPT Desktop"
    icon = qapp.windowIcon()
    assert not icon.isNull()
    sizes = {s.width() for s in icon.availableSizes()}
    assert {16, 32, 48, 256} <= sizes


def test_main_opens_the_file_given_on_the_command_line(qapp, monkeypatch, tmp_path):
    made = []

    def fake_window(state, controller=None, presets=None):
        made.append(FakeWindow(close_when_shown=True))
        return made[-1]

    monkeypatch.setattr("opt_desktop.gui.main_window.MainWindow", fake_window)
    try:
        assert app_module.main([str(tmp_path / "s.optsession"), "--model", "demo", "--engine", "thread"]) == 0
    finally:
        asyncio.set_event_loop(None)
    (window,) = made
    assert window.calls[0] == ("show",)
    assert ("open_session_file", tmp_path / "s.optsession") in window.calls
    assert qapp.desktopFileName() == "opt-desktop"


def test_main_installs_the_desktop_entry_without_a_window(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    assert app_module.main(["--install-desktop-entry"]) == 0
    assert "installed" in capsys.readouterr().out
    assert (tmp_path / "share" / "applications" / "opt-desktop.desktop").is_file()
    assert app_module.main(["--uninstall-desktop-entry"]) == 0
    assert not (tmp_path / "share" / "applications" / "opt-desktop.desktop").exists()


def test_python_dash_m_runs_the_app():
    out = subprocess.run([sys.executable, "-m", "opt_desktop", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("usage: opt-desktop")
    assert "--install-desktop-entry" in out.stdout and "file" in out.stdout


def test_first_run_offline_with_an_empty_cache_falls_back_to_the_demo_at_once(qtbot, qapp, monkeypatch, tmp_path):
    """No network, nothing cached: the window comes up, says the Hub is unreachable, runs the demo."""
    import huggingface_hub.constants

    from opt_desktop.gui import session_dialogs
    from opt_desktop.gui.main_window import MainWindow
    from opt_desktop.presets import PresetStore

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(session_dialogs, "ask_unsaved", lambda parent, name, running=False: "discard")
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    try:
        window = MainWindow(state=AppState(), presets=PresetStore(tmp_path / "presets"))
        qtbot.addWidget(window)
        t0 = time.monotonic()
        start(window, build_parser().parse_args([]), AppState())

        async def wait():
            while window.controller.model is None or window.controller.is_loading:
                if time.monotonic() - t0 > 60:
                    raise TimeoutError
                await asyncio.sleep(0.02)

        loop.run_until_complete(wait())
        model = window.controller.model
        assert model.source == "demo" and not model.random_weights and "Python's documentation" in model.label
        text = window.banner.text()
        assert "offline mode is on (HF_HUB_OFFLINE=1)" in text and "demo" in text
        window.close()
    finally:
        loop.close()
        asyncio.set_event_loop(None)
