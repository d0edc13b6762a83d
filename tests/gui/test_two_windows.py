"""One session file open in two windows, of one OPT Desktop or of two: a save never silently replaces
what the other saved since this window opened or saved the file; the person chooses reload,
overwrite or save as, and "Saved" is said only of what was saved."""

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fakes import fake_trace
from opt_desktop.gui import session_dialogs
from opt_desktop.session.file import load_session, save_session
from opt_desktop.session.session import Session
from window_driver import new_window

TESTS = Path(__file__).parents[1]


def ids(path) -> list[tuple[int, ...]]:
    return [run.token_ids for run in load_session(path).runs]


def run(seed: int):
    return fake_trace(seed=seed)


@pytest.fixture
def shared(tmp_path) -> Path:
    path = tmp_path / "shared.optsession"
    save_session(Session([run(0)]), path)
    return path


@pytest.fixture
def asked(monkeypatch):
    """Answers the "changed on disk" question with `asked.answer`, recording who was asked about what."""
    class Asked(list):
        answer = "cancel"

    questions = Asked()

    async def ask(parent, path):
        questions.append((parent, Path(path)))
        return questions.answer

    monkeypatch.setattr(session_dialogs, "ask_changed_on_disk", ask)
    return questions


def window_with(qtbot, loop, tmp_path, monkeypatch, path, seed):
    """A window that opened `path` and made one run of its own (`seed`)."""
    w = new_window(qtbot, tmp_path, monkeypatch)
    assert loop.run_until_complete(w.sessions.open_file(path))
    w.keeper.add_run(run(seed))
    return w


def save(loop, w) -> bool:
    return loop.run_until_complete(w.sessions.save())


def test_the_second_save_asks_and_writes_nothing_until_answered(qtbot, loop, tmp_path, monkeypatch,
                                                                 shared, asked):
    a = window_with(qtbot, loop, tmp_path, monkeypatch, shared, 1)
    b = window_with(qtbot, loop, tmp_path, monkeypatch, shared, 2)
    assert save(loop, a)
    assert asked == [] and a.statusBar().currentMessage() == f"Saved {shared}"
    a_saved = ids(shared)
    assert a_saved == [run(0).token_ids, run(1).token_ids]

    assert not save(loop, b)  # cancelled: B's runs are not written over A's
    assert asked == [(b, shared)]
    assert ids(shared) == a_saved
    assert b.isWindowModified() and not b.statusBar().currentMessage().startswith("Saved")
    assert "changed on disk" in b.banner.text()

    # A saves again: the file is still what A wrote, so no question.
    a.keeper.add_run(run(3))
    assert save(loop, a) and len(asked) == 1
    assert ids(shared) == a_saved + [run(3).token_ids]
    for w in (a, b):
        w.keeper.set_modified(False)
        w.close()


def test_overwrite_replaces_the_file_with_this_windows_runs(qtbot, loop, tmp_path, monkeypatch,
                                                            shared, asked):
    a = window_with(qtbot, loop, tmp_path, monkeypatch, shared, 1)
    b = window_with(qtbot, loop, tmp_path, monkeypatch, shared, 2)
    assert save(loop, a)
    asked.answer = "overwrite"
    assert save(loop, b)
    assert ids(shared) == [run(0).token_ids, run(2).token_ids] and not b.isWindowModified()
    assert "Saved" in b.statusBar().currentMessage()
    # Now A is the one whose copy is out of date.
    a.keeper.add_run(run(4))
    asked.answer = "cancel"
    assert not save(loop, a) and asked[-1] == (a, shared)
    assert ids(shared) == [run(0).token_ids, run(2).token_ids]
    a.keeper.set_modified(False)
    for w in (a, b):
        w.close()


def test_save_as_keeps_both(qtbot, loop, tmp_path, monkeypatch, shared, asked):
    a = window_with(qtbot, loop, tmp_path, monkeypatch, shared, 1)
    b = window_with(qtbot, loop, tmp_path, monkeypatch, shared, 2)
    assert save(loop, a)
    other = tmp_path / "mine.optsession"

    suggestions = []

    async def choose(parent, suggested):
        suggestions.append(suggested)
        return other

    monkeypatch.setattr(session_dialogs, "choose_save_path_later", choose)
    asked.answer = "save_as"
    assert save(loop, b)
    assert ids(shared) == [run(0).token_ids, run(1).token_ids]
    assert ids(other) == [run(0).token_ids, run(2).token_ids]
    assert b.keeper.path == other and b.windowTitle().startswith("mine.optsession")
    assert suggestions == [str(shared.with_name("shared (2).optsession"))]  # a free name beside it, not the same
    for w in (a, b):
        w.close()


def test_reload_shows_the_file_as_it_is_now(qtbot, loop, tmp_path, monkeypatch, shared, asked):
    a = window_with(qtbot, loop, tmp_path, monkeypatch, shared, 1)
    b = window_with(qtbot, loop, tmp_path, monkeypatch, shared, 2)
    assert save(loop, a)
    asked.answer = "reload"
    assert not save(loop, b)
    assert [r.token_ids for r in b.keeper.session.runs] == ids(shared) == [run(0).token_ids, run(1).token_ids]
    assert not b.isWindowModified()
    b.keeper.add_run(run(5))  # and from the reloaded file on, B saves without a question
    assert save(loop, b) and len(asked) == 1
    for w in (a, b):
        w.close()


def test_a_file_only_touched_or_removed_is_saved_without_a_question(qtbot, loop, tmp_path,
                                                                     monkeypatch, shared, asked):
    w = window_with(qtbot, loop, tmp_path, monkeypatch, shared, 1)
    st = shared.stat()
    os.utime(shared, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # a sync tool, a backup: same bytes
    assert save(loop, w) and asked == []
    w.keeper.add_run(run(2))
    shared.unlink()  # nobody's work is lost by writing it again
    assert save(loop, w) and asked == [] and len(ids(shared)) == 3
    w.close()


def test_two_saves_in_a_row_do_not_take_each_other_for_another_window(qtbot, loop, tmp_path, monkeypatch,
                                                                        shared, asked):
    w = window_with(qtbot, loop, tmp_path, monkeypatch, shared, 1)
    first = w.sessions.save()  # Ctrl+S twice: the second is queued behind the first
    w.keeper.add_run(run(2))
    second = w.sessions.save()
    assert loop.run_until_complete(asyncio.gather(first, second)) == [True, True]
    assert asked == [] and len(ids(shared)) == 3
    w.close()


SECOND_PROCESS = textwrap.dedent("""
    import asyncio, sys
    import qasync
    from PySide6.QtWidgets import QApplication
    from fakes import fake_trace
    from opt_desktop.gui.app_state import AppState
    from opt_desktop.gui.main_window import MainWindow

    app = QApplication([])
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    window = MainWindow(state=AppState())
    window.show()
    with loop:
        assert loop.run_until_complete(window.sessions.open_file(sys.argv[1]))
        window.keeper.add_run(fake_trace(seed=int(sys.argv[2])))
        assert loop.run_until_complete(window.sessions.save())
        window.close()
    print("saved")
""")


def test_a_save_by_another_opt_desktop_process_is_noticed(qtbot, loop, tmp_path, monkeypatch,
                                                          shared, asked):
    w = window_with(qtbot, loop, tmp_path, monkeypatch, shared, 1)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OPT_DESKTOP_HOME": str(tmp_path / "other-home"),
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", SECOND_PROCESS, str(shared), "7"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "saved" in out.stdout, out.stderr
    theirs = ids(shared)
    assert theirs == [run(0).token_ids, run(7).token_ids]
    assert not save(loop, w)
    assert asked == [(w, shared)] and ids(shared) == theirs
    w.keeper.set_modified(False)
    w.close()
