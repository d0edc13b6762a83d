"""Autosaves of instances that died are offered back; those of live ones (and one's own) are not."""

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from session_helpers import assert_same_trace, generate
from opt_desktop.engine import GenerationRequest, GenerationSettings
from opt_desktop import folders
from opt_desktop.session import Autosave, Session, load_session


@pytest.fixture(scope="module")
def session(pre_engine):
    return Session([generate(pre_engine, GenerationRequest(prompt="Keep me", settings=GenerationSettings(max_new_tokens=3)))])


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def data_dir(app_home):
    return folders.data_dir()


def test_default_folder_follows_the_data_dir(data_dir, app_home):
    assert data_dir == app_home / "data"
    assert Autosave().folder == app_home / "data" / "autosave"


def test_recovery_lists_only_dead_instances(session, data_dir, dead_pid):
    crashed = Autosave(pid=dead_pid)
    source = Path("/home/someone/work.optsession")
    path = crashed.save(session, source=source)
    assert path.parent == data_dir / "autosave" and path.is_file()

    me = Autosave()
    me.save(Session(session.runs * 2))
    running = Autosave(pid=os.getppid())  # the process that started the tests is alive
    running.save(session)

    found = me.recoverable()
    assert [r.path for r in found] == [crashed.path]
    rec = found[0]
    assert rec.source == source and rec.n_runs == 1
    assert abs(rec.saved_at - datetime.now(timezone.utc)) < timedelta(minutes=1)
    assert_same_trace(session.runs[0], load_session(rec.path).runs[0])

    # Seen from the other live instance: the crashed file again, not this live process's file.
    assert [r.path for r in running.recoverable()] == [crashed.path]
    me.forget(rec)
    assert not crashed.path.exists() and me.recoverable() == []
    me.discard()
    assert not me.path.exists() and running.path.exists()
    me.discard()  # twice is fine


def test_a_reused_pid_does_not_hide_a_crash(session, data_dir):
    """The owner is this pid but started at another time: the process that wrote it is gone."""
    me = Autosave()
    other = Autosave()
    other.save(session)
    stale = other.path.with_name(f"autosave-{os.getpid()}-12345-abcdef{other.path.suffix}")
    other.path.rename(stale)
    assert [r.path for r in me.recoverable()] == [stale]


def test_unreadable_autosaves_are_moved_aside_with_a_message(session, data_dir, dead_pid):
    folder = data_dir / "autosave"
    folder.mkdir(parents=True)
    good = Autosave(pid=dead_pid)
    good.save(session)
    bad = folder / f"autosave-{dead_pid}-0-00ff.optsession"
    bad.write_bytes(b"not a zip")
    (folder / "notes.txt").write_text("hello")
    found, messages = Autosave().scan()
    # The readable one is offered (so the name pattern matches autosaves), the damaged one is not.
    assert [r.path for r in found] == [good.path]
    assert len(messages) == 1 and str(bad) in messages[0] and "not a zip archive" in messages[0]
    moved = list(folders.damaged_dir().iterdir())
    assert [p.name.endswith(bad.name) for p in moved] == [True] and moved[0].read_bytes() == b"not a zip"
    assert str(moved[0]) in messages[0] and not bad.exists()
    assert (folder / "notes.txt").exists()  # not an autosave: left alone
    assert Autosave().scan() == (found, [])  # nothing is reported twice


def test_no_folder_yet(tmp_path):
    assert Autosave(tmp_path / "missing").recoverable() == []
