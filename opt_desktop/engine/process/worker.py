"""The engine process: an EngineService driven by messages on stdin, answering on stdout.

The window starts it (engine_process.py) so that importing torch, building a tokenizer and running
the model never hold the window's interpreter lock. Frames are protocol.py's (no pickle). Anything
the libraries print goes to stderr, never into the frame stream.

    python -m opt_desktop.engine.process.worker     # the window's child process
    opt-desktop-engine                              # the same engine, started by ssh on a GPU server
    opt-desktop-engine --version                    # its release and protocol version
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading

from ... import __version__
from ..jobs.job import JobEnd
from ..messages import errors
from . import protocol
from .process_messages import (
    PROTOCOL_VERSION,
    CountTokens,
    Hello,
    JobEnded,
    JobEvent,
    JobRunning,
    SetHeadMask,
    Shutdown,
    Stop,
    Submit,
    TokenCount,
)

log = logging.getLogger("opt_desktop.engine.process.worker")

LOG_FILE = "opt-desktop-engine.log"


class _Channel:
    """Writes frames to the window, one at a time (events come from the worker thread, answers
    from the reader)."""

    def __init__(self, stream):
        self.stream = stream
        self.lock = threading.Lock()
        self.broken = False

    def send(self, message) -> None:
        """Write one frame; protocol.Unsendable (nothing written) for a message no frame can hold."""
        parts = protocol.encode(message)  # before the lock: a message that cannot be sent writes nothing
        if self.broken:
            return
        with self.lock:
            try:
                for part in parts:
                    self.stream.write(part)
                self.stream.flush()
            except (OSError, ValueError):
                self.broken = True  # the window is gone; the read loop ends too

    def send_end(self, number: int, end, error: str, model) -> None:
        """A job's one end, whatever its result holds: if the result cannot cross, the end still
        does, as an error that says why."""
        try:
            self.send(JobEnded(number, end, error, model))
            return
        except Exception as exc:  # noqa: BLE001 - Unsendable, or anything else the encoder met
            line = (f"The job's result could not be sent to the window ({errors.one_line(exc)}); "
                    "the engine's log has the details.")
            log.exception("The end of job %d could not be sent to the window", number)
        failed = JobEnd("error", line, details=end.details)
        try:
            self.send(JobEnded(number, failed, "", model))
        except Exception:  # noqa: BLE001 - even the model's info would not go: the bare end does
            self.send(JobEnded(number, failed))


def _error_name(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    name = type(exc).__name__
    return name if isinstance(getattr(errors, name, None), type) and isinstance(exc, errors.EngineError) else ""


def serve(stdin, stdout) -> None:
    from ..jobs.service import EngineService

    channel = _Channel(stdout)
    engine = EngineService()
    jobs: dict[int, object] = {}
    channel.send(Hello(PROTOCOL_VERSION, os.getpid(), __version__, socket.gethostname()))

    def submit(msg: Submit) -> None:
        number = msg.job
        try:
            job = engine.submit(msg.request, on_event=lambda e: channel.send(JobEvent(number, e)),
                                on_start=lambda: channel.send(JobRunning(number)))
        except Exception as exc:  # noqa: BLE001 - a request the engine refuses ends its job at once
            message, details = errors.describe_error(exc, "The engine")
            channel.send_end(number, JobEnd("error", message, details), _error_name(exc), engine.info)
            return
        jobs[number] = job

        def ended(future) -> None:
            jobs.pop(number, None)
            exc = None if future.cancelled() else future.exception()
            channel.send_end(number, job.end, _error_name(exc), engine.info)

        job.future.add_done_callback(ended)

    try:
        while True:
            try:
                msg = protocol.read(stdin)
            except EOFError:
                break
            if isinstance(msg, Submit):
                submit(msg)
            elif isinstance(msg, Stop):
                if msg.job == 0:
                    engine.stop()
                elif (job := jobs.get(msg.job)) is not None:
                    job.stop()
            elif isinstance(msg, SetHeadMask):
                try:
                    engine.set_head_mask(msg.mask)
                except Exception:  # noqa: BLE001 - checked by the window before; logged, not fatal
                    log.exception("A head mask the engine refused")
            elif isinstance(msg, CountTokens):
                try:
                    n = engine.count_tokens(msg.text)
                except Exception:  # noqa: BLE001 - a count is a hint
                    n = None
                channel.send(TokenCount(msg.ask, n))
            elif isinstance(msg, Shutdown):
                break
            if channel.broken:
                break
    finally:
        engine.shutdown(wait=True)


def version_line() -> str:
    return f"opt-desktop-engine {__version__} (protocol {PROTOCOL_VERSION})"


def engine_command(argv: list[str] | None = None) -> int:
    """The `opt-desktop-engine` console script: what a window starts on a server through ssh."""
    parser = argparse.ArgumentParser(
        prog="opt-desktop-engine",
        description="The OPT Desktop engine: speaks the engine protocol on stdin and stdout (docs/engine-protocol.md). "
                    "A window or opt-desktop-cli starts it, locally or through ssh; it is not meant to be typed.")
    parser.add_argument("--version", action="version", version=version_line())
    parser.parse_args(argv)
    return main()


def main() -> int:
    # The frame stream gets the real stdout; everything else that writes to fd 1 goes to stderr.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from ..running.threads import prepare_environment
    from ...logs import setup_logging

    # The engine runs at the window's own priority. Lowered (it was at nice 10) it got a tenth of a core
    # beside any busy program and decoded 3-30x slower, while the window's timer was no more punctual.
    # The window keeps a core by other means: its CPU time counts as taken when "auto" chooses the
    # engine's threads, and "auto" uses no more threads than the cores other programs leave free.
    prepare_environment()  # before torch loads
    setup_logging(file_name=LOG_FILE)
    try:
        serve(sys.stdin.buffer, out)
    except protocol.ProtocolError:
        log.exception("The window sent something this engine cannot read")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
