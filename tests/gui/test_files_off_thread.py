"""Every file the window reads or writes goes through one executor off the window's thread: open,
save, add runs, restore, the list of autosaves, autosave, export. Nothing on the window's thread
waits for an autosave in flight, and an autosave's removal still comes after it."""

import asyncio
import threading
import time

import psutil

from fakes import fake_trace
from opt_desktop.gui import session_commands, session_dialogs, session_keeper
from opt_desktop.session import autosave as autosave_module
from opt_desktop.session.autosave import Autosave
from opt_desktop.session.file import save_session
from opt_desktop.session.session import Session
from window_driver import new_window, run_until


def _dead_pid() -> int:
    pid = 4_000_000
    while psutil.pid_exists(pid):
        pid += 1
    return pid


def record(monkeypatch, module, name, seen):
    real = getattr(module, name)

    def recorded(*args, **kwargs):
        seen.append((name, threading.current_thread()))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, recorded)


def test_every_file_job_runs_on_the_one_files_thread(qtbot, loop, tmp_path, monkeypatch):
    one, two = tmp_path / "one.optsession", tmp_path / "two.optsession"
    save_session(Session([fake_trace(seed=1)]), one)
    save_session(Session([fake_trace(seed=2)]), two)
    folder = tmp_path / "autosave"
    crashed = Autosave(folder, pid=_dead_pid())
    crashed.save(Session([fake_trace(seed=3)]))
    seen = []
    for module, name in ((session_keeper, "load_session"), (session_keeper, "save_session"),
                         (autosave_module, "save_session"), (autosave_module, "read_summary"),
                         (session_commands, "write_export")):
        record(monkeypatch, module, name, seen)
    w = new_window(qtbot, tmp_path, monkeypatch)
    w.keeper.autosave = Autosave(folder)

    loop.run_until_complete(w.sessions.check_recovery())  # lists the crashed autosave
    restore = next(b for b in w.banner.buttons if b.text() == "Restore")
    restore.click()  # Restore reads the autosave, then autosaves it as this window's
    run_until(loop, lambda: len(w.keeper.session.runs) == 1)
    assert loop.run_until_complete(w.sessions.open_file(one))
    assert loop.run_until_complete(w.sessions.add_runs_from_file(two))
    w.keeper.add_run(fake_trace(seed=4))
    loop.run_until_complete(w.keeper.autosave_finished_run())
    assert loop.run_until_complete(w.sessions.save_to(tmp_path / "three.optsession"))
    assert loop.run_until_complete(w.sessions.export_to("md", tmp_path / "three.md"))

    names = [name for name, _ in seen]
    for name in ("read_summary", "load_session", "save_session", "write_export"):
        assert name in names
    assert names.count("load_session") == 3  # the autosave restored, one file opened, one file's runs added
    threads = {thread for _, thread in seen}
    assert len(threads) == 1 and threads != {threading.main_thread()}
    assert next(iter(threads)).name.startswith("opt-files")
    w.close()


def test_nothing_waits_for_an_autosave_in_flight_and_its_removal_comes_after_it(qtbot, loop, tmp_path,
                                                                                 monkeypatch):
    w = new_window(qtbot, tmp_path, monkeypatch)
    gate = threading.Event()
    write = w.keeper.autosave.save

    def slow(*args, **kwargs):
        gate.wait(10)  # a big session compressing
        return write(*args, **kwargs)

    w.keeper.autosave.save = slow
    w.keeper.add_run(fake_trace())
    future = w.keeper.autosave_now()
    t0 = time.monotonic()
    w.keeper.new()  # a new session: the old one's autosave is to go
    assert time.monotonic() - t0 < 0.5
    gate.set()
    loop.run_until_complete(asyncio.wait([future]))
    assert w.keeper.wait_for_files(10)
    assert not w.keeper.autosave.path.exists()  # removed after it was written, not before

    gate.clear()
    w.keeper.add_run(fake_trace())
    future = w.keeper.autosave_now()
    w.keeper.set_modified(False)
    t0 = time.monotonic()
    w.close()  # nothing unsaved: closes at once, without waiting for the autosave
    assert time.monotonic() - t0 < 0.5 and not w.isVisible()
    gate.set()
    assert w.keeper.wait_for_files(10)
    assert not w.keeper.autosave.path.exists()


def test_a_change_made_while_the_file_is_written_stays_unsaved(qtbot, loop, tmp_path, monkeypatch):
    w = new_window(qtbot, tmp_path, monkeypatch)
    gate = threading.Event()
    write = session_keeper.save_session

    def slow(*args, **kwargs):
        gate.wait(10)
        return write(*args, **kwargs)

    monkeypatch.setattr(session_keeper, "save_session", slow)
    w.keeper.add_run(fake_trace(seed=1))
    path = tmp_path / "s.optsession"
    task = asyncio.ensure_future(w.sessions.save_to(path))
    loop.run_until_complete(asyncio.sleep(0.1))  # the save has taken its snapshot and is writing
    w.keeper.add_run(fake_trace(seed=2))  # a run that finishes meanwhile
    gate.set()
    assert loop.run_until_complete(task)
    assert w.keeper.path == path and w.isWindowModified()  # the second run is not in the file: still unsaved
    w.keeper.set_modified(False)
    w.close()


def test_restoring_over_unsaved_runs_asks_first(qtbot, loop, tmp_path, monkeypatch):
    folder = tmp_path / "autosave"
    Autosave(folder, pid=_dead_pid()).save(Session([fake_trace(seed=3)]))
    w = new_window(qtbot, tmp_path, monkeypatch)
    w.keeper.autosave = Autosave(folder)
    mine = fake_trace(seed=4)
    w.keeper.add_run(mine)
    loop.run_until_complete(w.sessions.check_recovery())
    answers = []
    monkeypatch.setattr(session_dialogs, "ask_unsaved", lambda parent, name, running=False: answers.append(name)
                        or "cancel")
    next(b for b in w.banner.buttons if b.text() == "Restore").click()
    loop.run_until_complete(asyncio.sleep(0.2))
    assert answers == ["Untitled session"] and w.keeper.session.runs == [mine]  # cancelled: nothing replaced
    assert "can be restored" in w.banner.text()  # and the offer stays
    monkeypatch.setattr(session_dialogs, "ask_unsaved", lambda parent, name, running=False: "discard")
    next(b for b in w.banner.buttons if b.text() == "Restore").click()
    restored = fake_trace(seed=3).token_ids
    run_until(loop, lambda: [r.token_ids for r in w.keeper.session.runs] == [restored])
    w.keeper.set_modified(False)
    w.close()
