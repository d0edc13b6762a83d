"""Sessions in the window: save, close, reopen, unsaved-changes guard, bad files, autosave and restore, re-run, forks."""

import math

import numpy as np
import psutil
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from opt_desktop.engine import GenerationSettings
from opt_desktop.gui import session_dialogs
from opt_desktop.session.autosave import Autosave
from window_driver import finished, generate, run_until

def _dead_pid() -> int:
    pid = 4_000_000
    while psutil.pid_exists(pid):
        pid += 1
    return pid


def _plain(value):
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def table_values(w):
    """Every cell of the inspector's token table, as shown (alternatives' text included)."""
    w.tabs.setCurrentWidget(w.inspector)
    w.inspector.refresh()
    model = w.inspector.table.model
    return [[_plain(model.raw(pos, col)) for col in range(model.columnCount())] for pos in range(model.rowCount())]


def test_save_close_reopen_shows_the_same_inspector(make_window, loop, tmp_path, monkeypatch):
    w = make_window()
    trace = generate(w, loop)
    # The logit lens is computed in the background once a run ends; what arrives during a save is
    # left unsaved (the title says so), so this waits for it.
    run_until(loop, lambda: trace.lens_table() is not None and not w.controller.is_busy)
    assert w.isWindowModified()
    path = tmp_path / "work.optsession"
    monkeypatch.setattr(session_dialogs, "choose_save_path", lambda parent, suggested: path)
    assert loop.run_until_complete(w.sessions.save())  # never saved: goes through Save As
    assert path.is_file() and not w.isWindowModified()
    assert w.windowTitle().startswith("work.optsession[*]")
    before = table_values(w)
    hidden_before = w.presenter.trace.hidden("norm").copy()
    w.close()

    w2 = make_window(load=False)  # no model: the file alone must show everything
    assert loop.run_until_complete(w2.sessions.open_file(path))
    assert w2.presenter.trace.token_ids == trace.token_ids
    assert w2.output.toPlainText() == trace.text
    assert table_values(w2) == before
    np.testing.assert_array_equal(w2.presenter.trace.hidden("norm"), hidden_before)
    assert not w2.isWindowModified() and "work.optsession" in w2.windowTitle()
    assert [a.text() for a in w2.recent_menu.actions()] == ["work.optsession"]


def test_closing_with_unsaved_runs_asks(make_window, loop, monkeypatch):
    w = make_window()
    generate(w, loop)
    answers = []
    monkeypatch.setattr(session_dialogs, "ask_unsaved",
                        lambda parent, name, running=False: answers.append(name) or "cancel")
    w.close()
    assert answers == ["Untitled session"] and w.isVisible()  # cancelled: still open, run still there
    assert len(w.keeper.session.runs) == 1
    monkeypatch.setattr(session_dialogs, "ask_unsaved", lambda parent, name, running=False: "discard")
    w.close()
    assert not w.isVisible()


def test_a_bad_file_changes_nothing(make_window, loop, tmp_path):
    w = make_window()
    trace = generate(w, loop)
    w.keeper.set_modified(False)
    bad = tmp_path / "broken.optsession"
    bad.write_bytes(b"this is not a zip archive")
    assert not loop.run_until_complete(w.sessions.open_file(bad))
    assert "broken.optsession" in w.banner.text()
    assert "\n" not in w.banner.text()
    assert w.keeper.session.runs == [trace] and w.presenter.trace is trace
    assert w.output.toPlainText() == trace.text


def test_dropping_a_session_file_opens_it(make_window, loop, tmp_path, monkeypatch):
    w = make_window()
    trace = generate(w, loop)
    path = tmp_path / "dropped.optsession"
    assert loop.run_until_complete(w.keeper.save_async(path)) == "saved"
    w.keeper.new()
    assert w.keeper.session.runs == []

    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, data, Qt.MouseButton.NoButton,
                       Qt.KeyboardModifier.NoModifier)
    w.dropEvent(event)
    run_until(loop, lambda: w.presenter.trace is not None)  # read off the GUI thread
    assert w.presenter.trace.token_ids == trace.token_ids


def test_autosave_after_a_run_is_offered_after_a_crash(make_window, loop, tmp_path):
    folder = tmp_path / "autosave"
    crashed = make_window(autosave=Autosave(folder, pid=_dead_pid()))
    trace = generate(crashed, loop)
    crashed.keeper.wait_for_files(10)  # written off the GUI thread when the run finished
    assert crashed.keeper.autosave.path.is_file()
    crashed.keeper.close_cleanly = lambda: None  # the process "dies": no clean exit
    crashed.close()

    w = make_window(autosave=Autosave(folder), load=False)
    loop.run_until_complete(w.sessions.check_recovery())  # the autosaves are listed off the GUI thread
    assert "can be restored" in w.banner.text()
    restore = next(b for b in w.banner.buttons if b.text() == "Restore")
    restore.click()
    run_until(loop, lambda: w.presenter.trace is not None)  # read off the GUI thread
    assert w.presenter.trace.token_ids == trace.token_ids
    assert w.isWindowModified()  # restored work is unsaved until the person saves it
    assert Autosave(folder).recoverable() == [] or all(r.path != crashed.keeper.autosave.path
                                                       for r in Autosave(folder).recoverable())


def test_rerun_reproduces_a_seeded_run(make_window, loop):
    w = make_window()
    first = generate(w, loop)
    w.settings_panel.set_settings(GenerationSettings(max_new_tokens=3))  # re-run ignores the panel
    w.runs.rerun()
    run_until(loop, lambda: len(w.keeper.session.runs) == 2 and finished(w)())
    again = w.keeper.session.runs[1]
    assert again.token_ids == first.token_ids
    assert again.label == "re-run of #1"


def test_fork_continues_from_the_chosen_alternative(make_window, loop):
    w = make_window()
    base = generate(w, loop, settings=GenerationSettings(max_new_tokens=8))
    pos = base.n_prompt + 2
    alt = int(next(t for t in base.top_ids[pos] if t != base.token_ids[pos]))
    w.runs.fork(pos, alt)
    run_until(loop, lambda: len(w.keeper.session.runs) == 2 and finished(w)())
    fork = w.keeper.session.runs[1]
    assert fork.parent == 0 and fork.fork_position == pos
    assert fork.token_ids[:pos] == base.token_ids[:pos] and fork.token_ids[pos] == alt
    assert w.presenter.trace is fork
    assert w.run_list.topLevelItemCount() == 1 and w.run_list.topLevelItem(0).childCount() == 1
    w.presenter.show_run(0)  # moving between branches
    assert w.output.toPlainText() == base.text


def test_runs_of_two_files_can_be_compared(make_window, loop, tmp_path):
    w = make_window()
    first = generate(w, loop, prompt="One file", settings=GenerationSettings(max_new_tokens=5))
    a = tmp_path / "a.optsession"
    assert loop.run_until_complete(w.keeper.save_async(a)) == "saved"
    w.keeper.new()
    second = generate(w, loop, prompt="Other file", settings=GenerationSettings(max_new_tokens=5))
    assert loop.run_until_complete(w.sessions.add_runs_from_file(a))
    runs = w.keeper.session.runs
    assert [r.token_ids for r in runs] == [second.token_ids, first.token_ids]
    assert runs[1].label == "a" and w.isWindowModified()
    w.tabs.setCurrentWidget(w.compare)
    w.analysis.compare.compare_runs(0, 1)
    assert w.compare.comparison.first_diff is not None
    bad = tmp_path / "bad.optsession"
    bad.write_bytes(b"junk")
    assert not loop.run_until_complete(w.sessions.add_runs_from_file(bad)) and len(w.keeper.session.runs) == 2
    assert "bad.optsession" in w.banner.text()


def test_a_reopened_file_shows_lens_head_importance_and_settings_without_a_model(make_window, loop, tmp_path):
    w = make_window()
    trace = generate(w, loop, settings=GenerationSettings(max_new_tokens=6, do_sample=True, seed=4))
    run_until(loop, lambda: trace.lens_table() is not None)  # computed in the background once the run ended
    w.tabs.setCurrentWidget(w.importance)
    w.importance.start_button.click()
    run_until(loop, lambda: trace.head_importances() and not w.controller.is_busy)
    path = tmp_path / "kept.optsession"
    assert loop.run_until_complete(w.sessions.save_to(path))

    w2 = make_window(load=False)  # no model at all
    assert loop.run_until_complete(w2.sessions.open_file(path))
    reopened = w2.presenter.trace
    assert w2.controller.model is None
    # the lens, from the file
    pos = reopened.n_prompt + 1
    w2.tabs.setCurrentWidget(w2.inspector)
    w2.inspector.tabs.setCurrentWidget(w2.inspector.lens)
    w2.inspector.select_position(pos)
    run_until(loop, lambda: w2.inspector._lens_state == ("result", pos))
    expected = trace.lens_at(pos)
    assert [r[0] for r in w2.inspector.lens.result.top_pieces] == [r[0] for r in expected.top_pieces]
    # with the next token's exact rank per layer, as stored
    assert w2.inspector.lens.ranks_exact
    np.testing.assert_array_equal(w2.inspector.lens.ranks, reopened.lens_ranks(pos))
    # head importance, from the file
    np.testing.assert_array_equal(w2.importance.result.delta, trace.head_importances()[-1].delta)
    # the settings it was made with, and they can be used again
    assert w2.run_details.values["seed"].text() == "4" and "sampling" in w2.run_details.values["decoding"].text()
    w2.run_details.use_button.click()
    assert w2.settings_panel.settings().seed == 4 and w2.settings_panel.settings().do_sample
