"""The byte pipes an engine's frames travel over, and a handle on the other end.

An engine elsewhere (remote_engine.py) needs only this: somewhere to write frames, somewhere to read
them, a way to end and observe the other end, and the words for what went wrong there. A child
process is one (below); `ssh host opt-desktop-engine` is another (ssh.py).
"""

from __future__ import annotations

import signal
import subprocess
from typing import BinaryIO, Protocol

SAFE = "The session is safe: restart the engine and load the model again."


class Transport(Protocol):
    to_engine: BinaryIO  # the engine's frames are written here...
    from_engine: BinaryIO  # ...and its answers read here, raw: a read returns whatever has arrived
    name: str  # the other end in a sentence: "The engine process", "The engine on gpu1"
    recovery: str  # what the person can do once it is gone (SAFE, or how to reconnect)
    not_an_engine: str  # what to check when the other end never spoke as an engine
    heavy_arrays_stay: bool  # the link is a network: residual and attention rows stay with the engine

    def close_input(self) -> None:
        """No more frames for the engine: it ends once it has read what was sent."""
        ...

    def kill(self) -> None:
        """End the other end at once (it is stuck, or speaks something else)."""
        ...

    def wait(self, timeout: float | None = None) -> int | None:
        """The other end's exit status once it has ended; None if it has not within `timeout` s."""
        ...

    def describe_end(self, status: int, greeted: bool) -> str:
        """One line for an end nobody asked for, with exit status `status`; `greeted`: whether the
        engine had said Hello (else it never started, or never was one)."""
        ...

    def install_advice(self, version: str) -> str:
        """How to run release `version` of the engine at the other end (after a version mismatch)."""
        ...


def describe_status(status: int) -> str:
    """Why a process ended, in a few words."""
    if status in (-9, 137):  # SIGKILL, as the kernel's out-of-memory killer sends it (137: through a shell)
        return "it was killed or ran out of memory"
    if status < 0:
        try:
            return f"it was ended by {signal.Signals(-status).name}"
        except ValueError:
            return f"it was ended by signal {-status}"
    return f"exit code {status}"


class ChildProcess:
    """A Transport to an engine in a child process of this one, over its stdin and stdout."""

    name = "The engine process"
    recovery = SAFE
    not_an_engine = SAFE
    heavy_arrays_stay = False  # a pipe on the same machine carries them at memory speed

    def __init__(self, command: list[str]):
        # stderr is inherited: what the libraries print there reaches the terminal, if any.
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.to_engine = self.process.stdin
        self.from_engine = self.process.stdout

    @property
    def pid(self) -> int:
        return self.process.pid

    def close_input(self) -> None:
        try:
            self.to_engine.close()
        except OSError:
            pass

    def kill(self) -> None:
        try:
            self.process.kill()
        except OSError:  # it had ended already
            pass

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def describe_end(self, status: int, greeted: bool) -> str:
        return f"The engine process stopped unexpectedly ({describe_status(status)}). {SAFE}"

    def install_advice(self, version: str) -> str:
        return "they come from different installations of OPT Desktop, so the engine was stopped."
