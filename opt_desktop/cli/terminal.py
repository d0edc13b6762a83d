"""What the CLI writes: results to stdout, everything else (progress, notes, the summary) to stderr.

Progress lines show only on a terminal and are wiped before anything else is written. A reader
that goes away (`| head`) ends the command quietly, as Unix tools do: `quiet_broken_pipe()`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys

import numpy as np

# A Unix tool whose reader went away dies of SIGPIPE, which a shell reports as 128 + 13.
EXIT_BROKEN_PIPE = 128 + getattr(signal, "SIGPIPE", 13)


def progress(text: str) -> None:
    """Show one passing line of progress on a terminal (nothing when stderr is a file or a pipe)."""
    if sys.stderr.isatty():
        print(f"\r\x1b[K{text}", end="", file=sys.stderr, flush=True)


def clear_progress() -> None:
    if sys.stderr.isatty():
        print("\r\x1b[K", end="", file=sys.stderr, flush=True)


def note(text: str) -> None:
    """One line on stderr, after whatever stdout has been given (so neither runs into the other)."""
    sys.stdout.flush()
    print(text, file=sys.stderr, flush=True)


def quiet_broken_pipe() -> int:
    """After stdout's reader went away: send what is still buffered for it nowhere (else Python's
    exit would fail writing it) and return the exit code of a Unix tool in the same place."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file (a test's capture): nothing is buffered for a pipe
        pass
    return EXIT_BROKEN_PIPE


def jsonable(value):
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def event_to_json(event) -> str:
    """One event as a JSON line; residual rows and full attention rows are left out (they are large)."""
    data = {"event": type(event).__name__}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if dataclasses.is_dataclass(value):
            value = {k.name: getattr(value, k.name) for k in dataclasses.fields(value)
                     if k.name not in ("residual", "attention_rows")}
        data[f.name] = value
    return json.dumps(jsonable(data), ensure_ascii=False)
