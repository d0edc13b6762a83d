"""The window's open path on damaged files: each mutant is refused in one line that stays on screen,
or opens; the session in view is never changed by a refusal, and nothing escapes as an exception."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "session"))
import mutants  # noqa: E402

from fakes import fake_trace  # noqa: E402
from opt_desktop.session import Session, save_session  # noqa: E402
from window_driver import new_window  # noqa: E402

N_MUTANTS = 60


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz-window") / "good.optsession"
    save_session(Session([fake_trace(), fake_trace(seed=1, keep_rows=True)]), path)
    return path.read_bytes()


def test_mutants_through_the_window_open_path(qtbot, loop, tmp_path, monkeypatch, source):
    errors = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: errors.append(exc))
    w = new_window(qtbot, tmp_path, monkeypatch)
    shown = fake_trace(seed=7)
    w.keeper.session.add(shown)
    w.presenter.show_run(0)
    refused = opened = 0
    for seed in range(N_MUTANTS):
        _, data = mutants.mutant(seed, source)
        path = tmp_path / f"m{seed}.optsession"
        path.write_bytes(data)
        before = w.keeper.session
        ok = loop.run_until_complete(w.sessions.open_path(path))  # what Open, a drop and the command line call
        if ok:
            opened += 1
            assert w.keeper.session is not before and w.presenter.trace is not None
            w.keeper.session.runs.clear()
            w.keeper.session.add(shown)
            w.presenter.show_run(0)
        else:
            refused += 1
            assert w.keeper.session is before and w.presenter.trace is shown  # nothing changed
            line = w.banner.text()
            assert path.name in line and "\n" not in line, line
            assert "Traceback" not in line and "Error:" not in line, line
        w.banner.dismiss()
        w.keeper.set_modified(False)
    assert errors == [] and refused > 10 and refused + opened == N_MUTANTS
    w.close()
