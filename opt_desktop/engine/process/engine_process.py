"""The engine in a child process: what the window uses.

The window's interpreter then never imports torch, builds a tokenizer or runs the model, so
nothing of the engine's can hold its GIL: the window stays responsive while a model loads. The
child is `python -m opt_desktop.engine.process.worker` (or the bundle's own executable with
--engine-worker), reached over its stdin and stdout; everything else (the frames, the jobs, a
death) is remote_engine.py's, the same for any transport.
"""

from __future__ import annotations

import sys
from typing import Callable

from .remote_engine import EngineDied, EngineFailure, RemoteEngine, RemoteJob
from .transport import ChildProcess

__all__ = ["EngineDied", "EngineFailure", "EngineProcess", "RemoteJob", "WORKER_FLAG", "worker_command"]

WORKER_FLAG = "--engine-worker"


def worker_command() -> list[str]:
    """How to start the engine process: this Python with the worker module, or in a frozen bundle
    (PyInstaller) the bundle's executable with a flag its entry point hands to worker.main."""
    if getattr(sys, "frozen", False):
        return [sys.executable, WORKER_FLAG]
    return [sys.executable, "-m", "opt_desktop.engine.process.worker"]


class EngineProcess(RemoteEngine):
    """An Engine in a child process of this one (`command`: the worker's, unless a test names another)."""

    def __init__(self, on_died: Callable[[str], None] | None = None, command: list[str] | None = None):
        command = command or worker_command()
        super().__init__(lambda: ChildProcess(command), on_died=on_died)

    @property
    def pid(self) -> int:
        return self._transport.pid
