"""What a file on disk was when a window last read or wrote it, to tell later whether someone else
(another window, another OPT Desktop, a sync tool) has changed it since.

Size and modification time say "unchanged" cheaply; when either differs the content's hash decides,
so a file that was only touched, or copied back byte for byte, is not taken for another's work.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()  # fast, and the file is read only once


@dataclass(frozen=True)
class FileStamp:
    size: int
    mtime_ns: int
    digest: str

    @classmethod
    def of(cls, path: str | Path) -> "FileStamp | None":
        """The file's stamp now; None when there is no such file. Reads the whole file (for its hash):
        call it off the window's thread."""
        path = Path(path)
        for _ in range(3):  # replaced while being hashed: stamp what is there now
            try:
                before = os.stat(path)
                digest = _digest(path)
                after = os.stat(path)
            except FileNotFoundError:
                return None
            if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):
                break
        return cls(after.st_size, after.st_mtime_ns, digest)

    def changed(self, path: str | Path) -> bool:
        """Does the file at `path` differ from what this stamp recorded? A file that is gone counts as
        unchanged: writing it again loses nobody's work."""
        try:
            now = os.stat(path)
        except FileNotFoundError:
            return False
        if (now.st_size, now.st_mtime_ns) == (self.size, self.mtime_ns):
            return False
        return now.st_size != self.size or _digest(Path(path)) != self.digest
