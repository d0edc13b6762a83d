"""The one error a session file raises, and the refusal it is made from (both one line in words)."""

from __future__ import annotations

import re
from pathlib import Path


class SessionFileError(Exception):
    """A session file cannot be read or written; str() is one line naming the file and the problem.

    `reason` is the problem alone (without the file's name)."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", message).strip())
        self.reason = reason if reason is not None else str(self)


class Refused(Exception):
    """Internal: why a file is refused, in words; becomes SessionFileError with the file's name."""


def refuse(path: Path, reason: str) -> SessionFileError:
    reason = re.sub(r"\s*[\r\n]+\s*", " ", reason).strip()
    return SessionFileError(f"Cannot open {path}: {reason}", reason)

