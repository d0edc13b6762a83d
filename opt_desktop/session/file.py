"""The .optsession file: a zip of session.json and arrays.safetensors (docs/session-format.md).

Only json and safetensors are ever parsed, never pickle: a session someone sent cannot run code.
A file is read in full before anything is returned, so a bad one leaves nothing half-loaded.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from .atomic import write_atomic
from .schema import FORMAT, SCHEMA_VERSION, SessionDoc, check_run, first_error, migrate, restore_run, run_document, versions
from .session import Session

SESSION_SUFFIX = ".optsession"
JSON_NAME = "session.json"
ARRAYS_NAME = "arrays.safetensors"

# Limits on what a file may claim before any of it is unpacked.
MAX_JSON_BYTES = 1 << 30
MAX_ARRAYS_BYTES = 64 << 30
# Deflate cannot shrink anything more than about 1032:1, so a member claiming more is forged (a zip bomb).
MAX_RATIO = 1100
# Bytes a file may hold beyond what its members and directory account for (headers vary a little).
SLACK_BYTES = 1 << 20
_CHUNK = 1 << 22


class SessionFileError(Exception):
    """A session file cannot be read or written; str() is one line naming the file and the problem."""

    def __init__(self, message: str):
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", message).strip())


@dataclass(frozen=True)
class SessionSummary:
    """What session.json says about itself, read without the arrays (for lists of autosaves)."""

    n_runs: int
    saved_at: datetime | None
    source_file: Path | None


# --- writing -----------------------------------------------------------------------------------


def session_document(session: Session, runs: list[int] | None = None, source: Path | None = None) -> dict:
    """session.json's content for the given runs (all by default)."""
    chosen = range(len(session.runs)) if runs is None else runs
    model = session.model
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "versions": versions(),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_file": None if source is None else str(source),
        "model": None if model is None else dataclasses.asdict(model),
        "runs": [run_document(session.runs[i]) for i in chosen],
    }


def _write_members(f: BinaryIO, members: list[tuple[str, bytes, int]]) -> None:
    stamp = datetime.now().timetuple()[:6]
    with zipfile.ZipFile(f, "w", allowZip64=True) as z:
        for name, data, level in members:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data, compresslevel=level)


def save_session(session: Session, path: str | Path, *, source: Path | None = None) -> None:
    """Write `session` to `path` atomically: the previous file stays intact if anything fails.

    `source` (autosaves) records which file the person was working on.
    """
    path = Path(path)
    try:
        text = json.dumps(session_document(session, source=source), ensure_ascii=False, allow_nan=False, indent=1)
        arrays = {f"runs.{i}.{name}": a for i, run in enumerate(session.runs) for name, a in run.arrays().items()}
        blob = save_arrays(arrays, metadata={"format": FORMAT, "schema_version": str(SCHEMA_VERSION)})
        # The arrays get the fastest deflate level: float data barely shrinks, NaN padding shrinks at any level.
        members = [(JSON_NAME, text.encode("utf-8"), 6), (ARRAYS_NAME, blob, 1)]
        write_atomic(path, lambda f: _write_members(f, members))
    except OSError as exc:
        raise SessionFileError(f"Could not save {path}: {exc.strerror or exc}") from None
    except MemoryError:
        raise SessionFileError(f"Could not save {path}: not enough memory") from None
    except ValueError as exc:  # a value JSON cannot hold (NaN in a timing, say)
        raise SessionFileError(f"Could not save {path}: {exc}") from None


# --- reading -----------------------------------------------------------------------------------


def _unsafe_name(name: str) -> bool:
    parts = re.split(r"[\\/]", name)
    return name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or ".." in parts


def _check_archive(path: Path, z: zipfile.ZipFile, size: int) -> None:
    claimed = 22 + 20 + 56 + len(z.comment)  # end records (zip64 included) and the archive comment
    for info in z.infolist():
        name = info.filename
        if _unsafe_name(name):
            raise SessionFileError(f"Cannot open {path}: it holds a member named {name!r} that points outside "
                                   "its folder; refusing it")
        if info.flag_bits & 0x1:
            raise SessionFileError(f"Cannot open {path}: its member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise SessionFileError(f"Cannot open {path}: its member {name!r} uses an unsupported compression method")
        if info.file_size > MAX_RATIO * info.compress_size + (64 << 10):
            raise SessionFileError(
                f"Cannot open {path}: its member {name!r} claims to expand from {info.compress_size:,} to "
                f"{info.file_size:,} bytes, more than any real file does (a zip bomb?); refusing it")
        name_bytes = len(name.encode("utf-8"))
        # local header + data + data descriptor, then the central directory entry
        claimed += 30 + name_bytes + len(info.extra) + info.compress_size + 24
        claimed += 46 + name_bytes + len(info.extra) + len(info.comment)
    if size > claimed + SLACK_BYTES:
        raise SessionFileError(f"Cannot open {path}: the file is {size:,} bytes but its contents account for only "
                               f"{claimed:,}; it is damaged or has data added to it")


def _read_member(path: Path, z: zipfile.ZipFile, name: str, limit: int) -> bytes:
    try:
        info = z.getinfo(name)
    except KeyError:
        raise SessionFileError(f"Cannot open {path}: it has no {name} (not an OPT Desktop session, or damaged)") from None
    if info.file_size > limit:
        raise SessionFileError(f"Cannot open {path}: {name} claims {info.file_size:,} bytes, more than the limit "
                               f"of {limit:,}")
    parts, total = [], 0
    with z.open(info) as member:  # zipfile stops at the declared size and checks the CRC at the end
        while chunk := member.read(_CHUNK):
            total += len(chunk)
            if total > info.file_size:
                raise SessionFileError(f"Cannot open {path}: {name} is longer than it claims")
            parts.append(chunk)
    return b"".join(parts)


def _open_archive(path: Path):
    """(zip, size) for a readable zip at path, or SessionFileError."""
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise SessionFileError(f"Cannot open {path}: it is a folder, not a session file")
        f = open(path, "rb")
    except FileNotFoundError:
        raise SessionFileError(f"Cannot open {path}: no such file") from None
    except OSError as exc:
        raise SessionFileError(f"Cannot open {path}: {exc.strerror or exc}") from None
    try:
        if not zipfile.is_zipfile(f):
            f.seek(0)
            if f.read(4) == b"PK\x03\x04":
                raise SessionFileError(f"Cannot open {path}: the archive is damaged (its end is missing: the file "
                                       "was cut short, or data was added after it)")
            raise SessionFileError(f"Cannot open {path}: it is not an OPT Desktop session (not a zip archive)")
        f.seek(0)
        z = zipfile.ZipFile(f)
        _check_archive(path, z, size)
    except BaseException:
        f.close()
        raise
    return z, f


def _read_document(path: Path, z: zipfile.ZipFile) -> dict:
    raw = _read_member(path, z, JSON_NAME, MAX_JSON_BYTES)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SessionFileError(f"Cannot open {path}: {JSON_NAME} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise SessionFileError(f"Cannot open {path}: {JSON_NAME} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise SessionFileError(f"Cannot open {path}: {JSON_NAME} is not a JSON object")
    if doc.get("format") != FORMAT:
        raise SessionFileError(f"Cannot open {path}: it is not an OPT Desktop session ({JSON_NAME} has format "
                               f"{doc.get('format')!r}, expected {FORMAT!r})")
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SessionFileError(f"Cannot open {path}: {JSON_NAME} has no valid schema_version ({version!r})")
    if version > SCHEMA_VERSION:
        written_by = (doc.get("versions") or {}).get("app") if isinstance(doc.get("versions"), dict) else None
        ours = versions()["app"]
        by = f"OPT Desktop {written_by}" if written_by else "a newer OPT Desktop"
        raise SessionFileError(
            f"Cannot open {path}: it was written by {by} (session schema {version}); this OPT Desktop "
            f"{ours or ''} reads schema {SCHEMA_VERSION} and older: update OPT Desktop to open it")
    return migrate(doc)


def _read(path: Path) -> Session:
    z, f = _open_archive(path)
    with f, z:
        raw_doc = _read_document(path, z)
        try:
            doc = SessionDoc.model_validate(raw_doc)
        except ValidationError as exc:
            raise SessionFileError(f"Cannot open {path}: {JSON_NAME} {first_error(exc)}") from None
        blob = _read_member(path, z, ARRAYS_NAME, MAX_ARRAYS_BYTES)
    try:
        arrays = load_arrays(blob)
    except (SafetensorError, ValueError, TypeError, KeyError) as exc:
        raise SessionFileError(f"Cannot open {path}: {ARRAYS_NAME} is damaged ({exc})") from None
    del blob
    per_run: dict[int, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        m = re.fullmatch(r"runs\.(\d+)\.(\w+)", key)
        if m:
            per_run.setdefault(int(m.group(1)), {})[m.group(2)] = array
    runs = []
    for i, run_doc in enumerate(doc.runs):
        try:
            check_run(run_doc, i)
            runs.append(restore_run(run_doc, per_run.get(i, {})))
        except ValueError as exc:
            raise SessionFileError(f"Cannot open {path}: run {i + 1}: {exc}") from None
    return Session(runs)


def load_session(path: str | Path) -> Session:
    """Read a whole session file; raises SessionFileError (one line) and nothing else."""
    path = Path(path)
    try:
        return _read(path)
    except SessionFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise SessionFileError(f"Cannot open {path}: the archive is damaged ({exc})") from None
    except OSError as exc:
        raise SessionFileError(f"Cannot open {path}: {exc.strerror or exc}") from None
    except MemoryError:
        raise SessionFileError(f"Cannot open {path}: not enough memory to read it") from None
    except Exception as exc:  # the promise is one clear line, whatever a crafted file does
        raise SessionFileError(f"Cannot open {path}: {type(exc).__name__}: {exc}") from None


def read_summary(path: str | Path) -> SessionSummary:
    """Run count, save time and source file from session.json alone; raises SessionFileError."""
    path = Path(path)
    try:
        z, f = _open_archive(path)
        with f, z:
            doc = _read_document(path, z)
    except SessionFileError:
        raise
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError) as exc:
        raise SessionFileError(f"Cannot open {path}: the archive is damaged ({exc})") from None
    runs = doc.get("runs")
    saved_at = source = None
    try:
        saved_at = datetime.fromisoformat(doc["saved_at"])
    except (KeyError, TypeError, ValueError):
        pass
    if isinstance(doc.get("source_file"), str):
        source = Path(doc["source_file"])
    return SessionSummary(n_runs=len(runs) if isinstance(runs, list) else 0, saved_at=saved_at, source_file=source)
