"""Which process wrote a file: a tag of pid and start time, and whether that writer is still alive.

Autosaves and the temporary files of atomic writes carry the tag in their names, so a later start
can tell the leftovers of a process that died from the files of one still running (a pid alone is
reused by the system; the pid with its start time is not).
"""

from __future__ import annotations

import os

import psutil


def started_at(pid: int) -> int:
    """Whole seconds since the epoch at which process `pid` started; 0 when it is not running."""
    try:
        return int(psutil.Process(pid).create_time())
    except (psutil.Error, OSError, ValueError, OverflowError):
        return 0


_OWN_START = started_at(os.getpid())


def own_tag() -> str:
    """'<pid>-<start>' of this process."""
    return f"{os.getpid()}-{_OWN_START}"


def tag_of(pid: int) -> str:
    return f"{pid}-{started_at(pid)}"


def alive(pid: int, started: int) -> bool:
    """The process that had `pid` and started at `started` is still running (a reused pid is not)."""
    now = started_at(pid)
    return now != 0 and (started == 0 or abs(now - started) <= 1)
