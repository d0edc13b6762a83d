import pytest

from opt_desktop.engine.process.engine_process import EngineProcess


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
