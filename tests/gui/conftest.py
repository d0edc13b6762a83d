"""The window's fixtures: a qasync loop, a window with the demo model loaded, and a maker of windows.
What drives a window (run_until, generate, finished…) is in window_driver.py."""

import asyncio

import pytest
import qasync

from window_driver import load_demo, new_window


@pytest.fixture
def loop(qapp):
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()  # now, while its Qt objects exist (qasync's __del__ would fail later)
    asyncio.set_event_loop(None)


@pytest.fixture
def window(qtbot, loop, tmp_path, monkeypatch):
    w = new_window(qtbot, tmp_path, monkeypatch)
    load_demo(w, loop)
    yield w
    w.close()


@pytest.fixture
def make_window(qtbot, loop, tmp_path, monkeypatch):
    """make(autosave=None, load=True): a new window (with the demo model unless load=False), closed at the end."""
    windows = []

    def make(autosave=None, load=True):
        w = new_window(qtbot, tmp_path, monkeypatch)
        if autosave is not None:
            w.keeper.autosave = autosave
        if load:
            load_demo(w, loop)
        windows.append(w)
        return w

    yield make
    for w in windows:
        if w.isVisible():
            w.close()
