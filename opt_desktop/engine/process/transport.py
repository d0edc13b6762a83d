"""The byte pipes an engine's frames travel over, and a handle on the other end.

An engine elsewhere (remote_engine.py) needs only this: somewhere to write frames, somewhere to read
them, and a way to end and observe the other end. A child process is one; `ssh host
opt-desktop-engine` would be another with the same four methods.
"""

from __future__ import annotations

import signal
import subprocess
from typing import BinaryIO, Protocol


class Transport(Protocol):
    to_engine: BinaryIO  # the engine's frames are written here...
    from_engine: BinaryIO  # ...and its answers read here, raw: a read returns whatever has arrived

    def close_input(self) -> None:
        """No more frames for the engine: it ends once it has read what was sent."""
        ...

    def kill(self) -> None:
        """End the other end at once (it is stuck, or speaks something else)."""
        ...

    def wait(self, timeout: float | None = None) -> int | None:
        """The other end's exit status once it has ended; None if it has not within `timeout` s."""
        ...

    def describe_exit(self, status: int) -> str:
        """Why it ended, in a few words, for a line the person reads."""
        ...


class ChildProcess:
    """A Transport to an engine in a child process of this one, over its stdin and stdout."""

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

    def describe_exit(self, status: int) -> str:
        if status in (-9, 137):  # SIGKILL, as the kernel's out-of-memory killer sends it (137: through a shell)
            return "it was killed or ran out of memory"
        if status < 0:
            try:
                return f"it was ended by {signal.Signals(-status).name}"
            except ValueError:
                return f"it was ended by signal {-status}"
        return f"exit code {status}"
