"""A start always succeeds: whatever the app finds damaged on disk is moved aside and named in one line.

These checks are Qt-free (opt_desktop.gui.startup); the window shows their messages.
"""

import json
import struct
import zipfile

import pytest

from fakes import fake_trace
from opt_desktop import folders
from opt_desktop.engine.messages.settings import LoadRequest
from opt_desktop.gui.app_state import AppState, state_path
from opt_desktop.gui.startup import startup_checks
from opt_desktop.presets import PRESETS_FILE
from opt_desktop.session import Session
from opt_desktop.session.autosave import Autosave


@pytest.fixture
def dead_pid():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def crashed_autosave(dead_pid):
    autosave = Autosave(pid=dead_pid)
    autosave.save(Session([fake_trace()]))
    return autosave.path


def set_version_needed(data: bytes, version: int) -> bytes:
    """The "version needed to extract" of the first member, in its local header and in the directory."""
    data = bytearray(data)
    struct.pack_into("<H", data, 4, version)
    entry = data.index(b"PK\x01\x02")
    struct.pack_into("<H", data, entry + 6, version)
    return bytes(data)


def deeply_nested(path):
    with zipfile.ZipFile(path) as z:
        arrays = z.read("arrays.safetensors")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("session.json", '{"format": "opt-desktop-session", "schema_version": 3, "runs": '
                   + "[" * 50_000 + "]" * 50_000 + "}")
        z.writestr("arrays.safetensors", arrays)


@pytest.mark.parametrize("damage", ["zip version 25.5", "nested JSON", "cut short", "not a zip"])
def test_a_damaged_autosave_never_stops_a_start(dead_pid, damage):
    """Issue 12, fault 1: one changed byte in a crashed instance's autosave made every start fail."""
    path = crashed_autosave(dead_pid)
    data = path.read_bytes()
    if damage == "zip version 25.5":
        path.write_bytes(set_version_needed(data, 255))
    elif damage == "nested JSON":
        deeply_nested(path)
    elif damage == "cut short":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"hello")
    report = startup_checks()
    assert report.recoverable == []
    assert len(report.messages) == 1
    line = report.messages[0]
    assert "\n" not in line and str(path) in line and "moved to" in line
    for raw in ("RecursionError", "NotImplementedError", "zip file version", "Error -3"):
        assert raw not in line
    assert not path.exists() and len(list(folders.damaged_dir().iterdir())) == 1
    assert startup_checks().messages == []  # moved aside: it never blocks a start again


def test_a_good_autosave_is_offered(dead_pid):
    path = crashed_autosave(dead_pid)
    report = startup_checks()
    assert [r.path for r in report.recoverable] == [path] and report.messages == []


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000])
def test_a_damaged_state_file_is_moved_aside(content):
    state_path().parent.mkdir(parents=True, exist_ok=True)
    state_path().write_bytes(content)
    report = startup_checks()
    assert report.state.model_dump() == AppState().model_dump()
    assert len(report.messages) == 1 and str(state_path()) in report.messages[0]
    assert "moved to" in report.messages[0] and not state_path().exists()
    assert [p.read_bytes() for p in folders.damaged_dir().iterdir()] == [content]


def test_damaged_recent_entries_are_dropped_and_the_rest_kept():
    state_path().parent.mkdir(parents=True, exist_ok=True)
    good = {"last_model": {"source": "demo"}, "recent_sessions": ["/a/b.optsession", 7, None, "x" * 10_000],
            "recent_sources": "not a list", "window_layout": "AAAA"}
    state_path().write_text(json.dumps(good), encoding="utf-8")
    state = AppState.load()
    assert state.last_model == LoadRequest(source="demo") and state.window_layout == "AAAA"
    assert state.recent_sessions == ["/a/b.optsession"] and state.recent_sources == []
    assert len(state.notes) == 1 and "What could be read of it is kept" in state.notes[0]
    # The original is kept in the damaged folder; the state file now holds what was kept.
    assert json.loads(next(folders.damaged_dir().iterdir()).read_text()) == good
    assert AppState.load().recent_sessions == ["/a/b.optsession"] and AppState.load().notes == []


def test_a_damaged_presets_file_is_named():
    folders.config_dir().mkdir(parents=True, exist_ok=True)
    (folders.config_dir() / PRESETS_FILE).write_text("{oops", encoding="utf-8")
    report = startup_checks()
    assert len(report.messages) == 1 and PRESETS_FILE in report.messages[0]
    assert "built-in" in report.messages[0] and "moved to" in report.messages[0]


def test_state_is_saved_atomically_in_the_config_folder(app_home):
    AppState(recent_sessions=["/x.optsession"]).save()
    assert state_path() == app_home / "config" / "state.json"
    assert [p.name for p in state_path().parent.iterdir()] == ["state.json"]
    assert AppState.load().recent_sessions == ["/x.optsession"]


def test_a_surprise_inside_a_check_is_a_message(monkeypatch):
    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(Autosave, "scan", broken)
    report = startup_checks()
    assert report.messages == ["Looking for autosaves left by a crash failed (details are in the log)."]
