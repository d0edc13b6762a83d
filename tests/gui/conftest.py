"""The window's fixtures: a qasync loop, a window with the demo model loaded, a maker of windows,
and the engine they run on (their own in this process, or the engine process the tests share).
What drives a window (run_until, generate, finished…) is in window_driver.py."""

import asyncio

import pytest
import qasync

from opt_desktop.engine import EngineService, LoadRequest
from opt_desktop.engine.process.engine_process import EngineProcess
from window_driver import ENGINES, load_demo, new_window


@pytest.fixture
def loop(qapp):
    # A test's app outlives its windows: the last one closing must not end the loop a test waits in.
    qapp.setQuitOnLastWindowClosed(False)
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()  # now, while its Qt objects exist (qasync's __del__ would fail later)
    asyncio.set_event_loop(None)


@pytest.fixture(scope="session")
def engine_process():
    """The engine process the window tests share (see borrowed_engine.py)."""
    engine = EngineProcess()
    yield engine
    engine.shutdown(wait=False)
    assert engine.join(10)


@pytest.fixture
def borrow(request):
    """`borrow(kind)`: the engine a window test runs on: None for "thread" (the window makes its own,
    in this process), the shared engine process for "process"."""

    def engine_for(kind: str):
        if kind == "thread":
            return None
        from borrowed_engine import BorrowedEngine

        return BorrowedEngine(request.getfixturevalue("engine_process"))

    return engine_for


@pytest.fixture(params=ENGINES)
def engine_kind(request):
    """Each engine in turn, for tests that make their windows themselves."""
    return request.param


@pytest.fixture(scope="module")
def reference():
    """The demo model in an engine of the test's own: the reference the window's results must equal,
    whichever engine the window runs on."""
    engine = EngineService()
    engine.load(LoadRequest(source="demo", device="cpu")).result()
    yield engine
    engine.shutdown()


@pytest.fixture
def window(qtbot, loop, tmp_path, monkeypatch, request, borrow):
    """A window with the demo model loaded; its engine is "thread" unless parametrized indirectly."""
    w = new_window(qtbot, tmp_path, monkeypatch, borrow(getattr(request, "param", "thread")))
    load_demo(w, loop)
    yield w
    w.close()


@pytest.fixture
def make_window(qtbot, loop, tmp_path, monkeypatch, request, borrow):
    """make(autosave=None, load=True): a new window (with the demo model unless load=False), closed at
    the end; their engine is "thread" unless parametrized indirectly."""
    windows = []
    kind = getattr(request, "param", "thread")

    def make(autosave=None, load=True):
        w = new_window(qtbot, tmp_path, monkeypatch, borrow(kind))
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
