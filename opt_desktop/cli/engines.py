"""Where the CLI's engine runs: in this process, or on a server through ssh (--engine ssh://…).

Over ssh the connection's steps pass on a terminal's progress line, and once the engine has
answered one line on stderr names its release and the server's devices; stdout carries exactly
what it carries with the engine in this process.
"""

from __future__ import annotations

from ..engine import EngineService
from ..engine.jobs.engine import Engine
from ..engine.messages.threads import AUTO, ThreadsRequest, parse_threads
from ..engine.process.ssh import ConnectStep, SshEngine
from ..engine.process.ssh_host import SshHost
from .terminal import note, progress


def _show_step(step: ConnectStep) -> None:
    if step.stage == "ready":
        note(step.text)
    else:
        progress(step.text)


def open_engine(args) -> Engine:
    threads = parse_threads(args.threads)
    if not args.engine:
        from ..engine.running.threads import ThreadTuner

        return EngineService(ThreadTuner(threads))
    host = SshHost.from_url(args.engine, command=args.remote_command, identity_file=args.identity,
                            options=tuple(args.ssh_option))
    engine = SshEngine(host, on_step=_show_step)
    if threads != AUTO:  # the server's threads, set before the load that follows
        engine.submit(ThreadsRequest(threads))
    return engine
