"""The engine on a server, over SSH: the same frames as a child process's, through the system's ssh.

`SshTransport` runs `ssh ... DESTINATION opt-desktop-engine` (ssh_host.py builds the command) and
speaks frames over its stdin and stdout. ssh's own messages and the server's error output arrive
on its stderr: each line goes to this side's log file, the connection's steps are read from them
(ssh -v says when it has connected and authenticated), and when ssh ends they say why, in one line
(ssh_lines.py). `SshEngine` is a RemoteEngine over it that reports those steps, then the engine's
release and the server's devices.
"""

from __future__ import annotations

import collections
import logging
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Literal

from ..loading.catalog import MachineMemory
from ..messages.requests import MachineRequest
from . import ssh_lines
from .process_messages import Hello
from .remote_engine import HELLO_TIMEOUT_S, RemoteEngine, _guarded
from .ssh_host import SshHost
from .transport import ChildProcess

log = logging.getLogger("opt_desktop.engine.ssh")

Stage = Literal["connecting", "authenticating", "starting", "greeted", "ready"]


@dataclass(frozen=True)
class ConnectStep:
    """How far a connection has come: connecting, authenticating, starting the engine, greeted by
    it (`hello`), ready (`machine`: the server's RAM and GPUs)."""

    stage: Stage
    text: str
    hello: Hello | None = None
    machine: MachineMemory | None = None


StepFn = Callable[[ConnectStep], None]


class SshTransport(ChildProcess):
    """A Transport to `host.command` on `host`, through ssh (a child process of this one: the ssh client;
    closing its input and killing it are the pipe's own)."""

    heavy_arrays_stay = True

    def __init__(self, host: SshHost, on_step: StepFn | None = None, ssh: str | None = None):
        self.host = host
        self.name = f"The engine on {host.name}"
        self.recovery = f"The session is safe: reconnect to {host.name} and load the model again."
        self.not_an_engine = (f"Is `{host.command}` OPT Desktop's engine there, and does the login shell on "
                              f"{host.name} print nothing on its standard output?")
        self._on_step = on_step
        self._lines: collections.deque[str] = collections.deque(maxlen=50)  # ssh's and the server's, not -v's
        self.authenticated = False
        self.remote_status: int | None = None  # the engine command's exit status (-1: a signal), if ssh heard it
        self._remote_ended = False  # the server said the command ended (else the connection ended first)
        self.transferred: tuple[int, int] | None = None  # (sent, received) bytes as ssh counted them
        self._step("connecting", f"Connecting to {host.address}…")
        log.info("Connecting to the engine on %s: %s", host.name, " ".join(host.ssh_args(ssh)))
        # A session of its own: Ctrl+C in a terminal stops a job (the CLI's handler) but never kills ssh.
        extra = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if sys.platform == "win32"
                 else {"start_new_session": True})
        self.process = subprocess.Popen(host.ssh_args(ssh), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, bufsize=0, **extra)
        self.to_engine = self.process.stdin
        self.from_engine = self.process.stdout
        self._stderr = threading.Thread(target=self._read_stderr, name="opt-engine-ssh-stderr", daemon=True)
        self._stderr.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _step(self, stage: Stage, text: str) -> None:
        if self._on_step is not None:
            _guarded(self._on_step, ConnectStep(stage, text))

    def _read_stderr(self) -> None:
        for raw in iter(self.process.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line.startswith("debug1: "):  # ssh -v: read for the steps, not logged (it is chatty)
                self._debug(line[len("debug1: "):])
                continue
            if not line:
                continue
            if line.startswith("Authenticated to "):
                self.authenticated = True
                self._step("starting", f"Starting the engine on {self.host.name}…")
            elif line.startswith("Transferred: sent "):
                self.transferred = ssh_lines.transferred(line)
            self._lines.append(line)
            log.info("%s: %s", self.host.name, line)  # the server's error output, in this side's log file

    def _debug(self, text: str) -> None:
        if text.startswith("Connection established"):
            self._step("authenticating", f"Authenticating to {self.host.address}…")
        elif "rtype exit-signal" in text:  # the command was ended by a signal (killed, out of memory)
            self._remote_ended = True
            self.remote_status = -1
        elif "rtype exit-status" in text:
            self._remote_ended = True
        elif text.startswith("Exit status ") and self._remote_ended and self.remote_status is None:
            try:
                self.remote_status = int(text.split()[2])
            except (IndexError, ValueError):
                pass

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._stderr.join(5.0)  # its last lines say why it ended
        return status

    def describe_end(self, status: int, greeted: bool) -> str:
        return ssh_lines.describe_end(self.host, status, greeted, list(self._lines), self.authenticated,
                                      self.remote_status, self.recovery)

    def install_advice(self, version: str) -> str:
        return ssh_lines.install_advice(self.host, version)


class SshEngine(RemoteEngine):
    """An Engine on `host`, reached with the system's ssh. `on_step` hears each step of every
    connection (the first and each `restart()`, i.e. reconnect), on a background thread."""

    def __init__(self, host: SshHost, on_step: StepFn | None = None, on_died: Callable[[str], None] | None = None,
                 ssh: str | None = None, hello_timeout: float = HELLO_TIMEOUT_S):
        self.host = host
        self.on_step = on_step
        self.machine: MachineMemory | None = None  # the server's RAM and GPUs, once it has said
        super().__init__(lambda: SshTransport(host, self._step, ssh), on_died=on_died, hello_timeout=hello_timeout)

    @property
    def transport(self) -> SshTransport:
        return self._transport

    def _step(self, step: ConnectStep) -> None:
        if self.on_step is not None:
            _guarded(self.on_step, step)

    def _start(self) -> None:
        self.machine = None
        super()._start()
        # Asked at once, so the answer comes before any load the caller queues next.
        self.submit(MachineRequest()).future.add_done_callback(self._machine_known)

    def _greeted(self, hello: Hello) -> None:
        self._step(ConnectStep("greeted", f"Engine {hello.engine or '?'} on {hello.host or self.host.name}; "
                                          "reading its devices…", hello=hello))

    def _machine_known(self, future) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # the connection failed: on_died has the line
        self.machine = future.result()
        hello = self.hello
        where = hello.host if hello is not None and hello.host else self.host.name
        release = hello.engine if hello is not None else "?"
        self._step(ConnectStep("ready", f"Engine {release} on {where}: {ssh_lines.describe_machine(self.machine)}",
                               hello=hello, machine=self.machine))
