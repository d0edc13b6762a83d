"""The .optsession file: a zip of session.json and arrays.safetensors (docs/session-format.md).

Only json and safetensors are ever parsed, never pickle: a session someone sent cannot run code.
A file is read in full before anything is returned, so a bad one leaves nothing half-loaded.

Reading never trusts a count before it is checked: the archive's directory is bounded before
zipfile reads it, members are decompressed a chunk at a time against caps (a member's declared
size can lie), session.json is bounded while it streams in and validated with hard limits
(session/limits.py), and each array's size comes from the checked document and must match the
arrays member's header before a byte of it is allocated. Every refusal is one SessionFileError
line naming the file and the problem in words.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
from pydantic import ValidationError
from safetensors.numpy import save as save_arrays

from . import limits, tensors
from ..engine.messages.errors import SettingsError
from ..atomic import write_atomic
from ..formatting import format_bytes
from .jsondoc import DocumentError, read_json
from .schema import FORMAT, SCHEMA_VERSION, CheckedRun, SessionDoc, check_run, first_error, migrate, restore_run, run_document, versions
from .requests import rerun_requests
from .session import Session

log = logging.getLogger(__name__)

SESSION_SUFFIX = ".optsession"
JSON_NAME = "session.json"
ARRAYS_NAME = "arrays.safetensors"

# Kept for callers and tests that lower them; the full set lives in session/limits.py.
MAX_JSON_BYTES = limits.MAX_JSON_BYTES
MAX_ARRAYS_BYTES = limits.MAX_ARRAYS_BYTES
MAX_RATIO = limits.MAX_RATIO
_ZIP_VERSION_READ = 63  # the highest "version needed to extract" Python's zipfile reads


class SessionFileError(Exception):
    """A session file cannot be read or written; str() is one line naming the file and the problem.

    `reason` is the problem alone (without the file's name)."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", message).strip())
        self.reason = reason if reason is not None else str(self)


class _Refused(Exception):
    """Internal: why a file is refused, in words; becomes SessionFileError with the file's name."""


def _refuse(path: Path, reason: str) -> SessionFileError:
    reason = re.sub(r"\s*[\r\n]+\s*", " ", reason).strip()
    return SessionFileError(f"Cannot open {path}: {reason}", reason)


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
    except (ValueError, TypeError) as exc:  # a value JSON cannot hold (NaN in a timing, say)
        log.exception("could not save %s", path)
        raise SessionFileError(f"Could not save {path}: a value in the session cannot be written ({exc})") from None
    except Exception:  # noqa: BLE001 - autosaves run unattended: one line, the traceback to the log
        log.exception("could not save %s", path)
        raise SessionFileError(f"Could not save {path}: an unexpected problem (the details are in the log)") from None


def check_save_path(path: str | Path) -> None:
    """Raise SessionFileError (one line) when a session could not be saved to `path`: its folder is
    missing or not writable, or `path` is a folder or a file that cannot be replaced. Checked
    before work whose result is to be saved there, so the work is not lost to a typo."""
    path = Path(path)
    folder = path.parent
    why = None
    if path.is_dir():
        why = "it is a folder"
    elif not folder.exists():
        why = f"the folder {folder} does not exist"
    elif not folder.is_dir():
        why = f"{folder} is not a folder"
    elif not os.access(folder, os.W_OK | os.X_OK):
        why = f"the folder {folder} is not writable"
    elif path.exists() and not os.access(path, os.W_OK):
        why = "the file is read-only"
    if why is not None:
        raise SessionFileError(f"Cannot save to {path}: {why}", why)


# --- the archive -------------------------------------------------------------------------------


def _unsafe_name(name: str) -> bool:
    parts = re.split(r"[\\/]", name)
    return name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or ".." in parts


def _check_directory(f: BinaryIO, size: int) -> None:
    """Bound the central directory from the end records before zipfile reads it into memory."""
    tail_len = min(size, 22 + 0xFFFF)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return  # zipfile reports the missing end record in its own way
    _, _, _, _, entries, cd_size, _, _ = struct.unpack("<4sHHHHIIH", tail[at: at + 22])
    if (entries == 0xFFFF or cd_size == 0xFFFFFFFF) and at >= 20 and tail[at - 20: at - 16] == b"PK\x06\x07":
        (record_at,) = struct.unpack("<Q", tail[at - 12: at - 4])
        if record_at + 56 <= size:
            f.seek(record_at)
            record = f.read(56)
            if record[:4] == b"PK\x06\x06":
                entries, cd_size = struct.unpack("<QQ", record[32:48])
    if entries > limits.MAX_MEMBERS:
        raise _Refused(f"it holds {entries:,} members; a session holds two")
    if cd_size > limits.MAX_DIRECTORY_BYTES:
        raise _Refused(f"its zip directory claims {cd_size:,} bytes, far more than two members need")


def _check_archive(z: zipfile.ZipFile, size: int) -> None:
    claimed = 22 + 20 + 56 + len(z.comment)  # end records (zip64 included) and the archive comment
    seen: set[str] = set()
    for info in z.infolist():
        name = info.filename
        if _unsafe_name(name):
            raise _Refused(f"it holds a member named {name!r} that points outside its folder; refusing it")
        if name in seen:
            raise _Refused(f"it holds two members named {name!r}; refusing to guess which one is meant")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise _Refused(f"its member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Refused(f"its member {name!r} uses an unsupported compression method")
        if info.extract_version > _ZIP_VERSION_READ:
            raise _Refused(f"it needs a zip reader of version {info.extract_version / 10:.1f}; the archive is "
                           "damaged or was not written by OPT Desktop")
        if info.file_size > limits.MAX_RATIO * info.compress_size + (64 << 10):
            raise _Refused(f"its member {name!r} claims to expand from {info.compress_size:,} to "
                           f"{info.file_size:,} bytes, more than any real file does (a zip bomb?); refusing it")
        name_bytes = len(name.encode("utf-8"))
        # local header + data + data descriptor, then the central directory entry
        claimed += 30 + name_bytes + len(info.extra) + info.compress_size + 24
        claimed += 46 + name_bytes + len(info.extra) + len(info.comment)
    if size > claimed + limits.SLACK_BYTES:
        raise _Refused(f"the file is {size:,} bytes but its contents account for only {claimed:,}; it is "
                       "damaged or has data added to it")


def _member(z: zipfile.ZipFile, name: str, limit: int) -> zipfile.ZipInfo:
    try:
        info = z.getinfo(name)
    except KeyError:
        raise _Refused(f"it has no {name} (not an OPT Desktop session, or damaged)") from None
    if info.file_size > limit:
        raise _Refused(f"{name} claims {info.file_size:,} bytes, more than the limit of {limit:,}")
    return info


def _chunks(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The member's bytes a chunk at a time; zipfile stops at the declared size and checks the CRC
    at the end, and this stops if more arrives than declared."""
    total = 0
    with z.open(info) as member:
        while chunk := member.read(limits.CHUNK_BYTES):
            total += len(chunk)
            if total > info.file_size:
                raise _Refused(f"{info.filename} is longer than it claims")
            yield chunk


class _Archive:
    """An open, checked session archive."""

    def __init__(self, path: Path):
        self.path = path
        try:
            if path.is_dir():
                raise _Refused("it is a folder, not a session file")
            self.file = open(path, "rb")
        except FileNotFoundError:
            raise _Refused("no such file") from None
        try:
            size = self.file.seek(0, 2)
            if not zipfile.is_zipfile(self.file):
                self.file.seek(0)
                if self.file.read(4) == b"PK\x03\x04":
                    raise _Refused("the archive is damaged (its end is missing: the file was cut short, or data "
                                   "was added after it)")
                raise _Refused("it is not an OPT Desktop session (not a zip archive)")
            _check_directory(self.file, size)
            self.file.seek(0)
            self.zip = zipfile.ZipFile(self.file)
            _check_archive(self.zip, size)
        except BaseException:
            self.file.close()
            raise

    def close(self) -> None:
        self.zip.close()
        self.file.close()

    def __enter__(self) -> "_Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def document(self) -> dict:
        """session.json, parsed with its limits, checked for format and version, migrated."""
        info = _member(self.zip, JSON_NAME, limits.MAX_JSON_BYTES)
        try:
            doc = read_json(_chunks(self.zip, info), JSON_NAME, limits.MAX_JSON_BYTES)
        except DocumentError as exc:
            raise _Refused(str(exc)) from None
        if not isinstance(doc, dict):
            raise _Refused(f"{JSON_NAME} is not a JSON object")
        if doc.get("format") != FORMAT:
            shown = repr(doc.get("format"))
            shown = shown if len(shown) <= 60 else shown[:59] + "…"
            raise _Refused(f"it is not an OPT Desktop session ({JSON_NAME} has format {shown}, expected {FORMAT!r})")
        version = doc.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            shown = repr(version)
            raise _Refused(f"{JSON_NAME} has no valid schema_version ({shown[:40]})")
        if version > SCHEMA_VERSION:
            app = doc.get("versions").get("app") if isinstance(doc.get("versions"), dict) else None
            app = app if isinstance(app, str) and len(app) <= 40 else None
            by = f"OPT Desktop {app}" if app else "a newer OPT Desktop"
            ours = versions()["app"]
            raise _Refused(f"it was written by {by} (session schema {version}); this OPT Desktop {ours or ''} reads "
                           f"schema {SCHEMA_VERSION} and older: update OPT Desktop to open it")
        return migrate(doc)

    def arrays(self, checked: list[CheckedRun]) -> dict[str, np.ndarray]:
        """Every array the checked runs need, read after the member's header was checked against them."""
        info = _member(self.zip, ARRAYS_NAME, limits.MAX_ARRAYS_BYTES)
        plan: dict[str, tuple[int, type, tuple[int, ...], bool]] = {}
        needed = 0
        for i, run in enumerate(checked):
            for name, (dtype, shape, required) in run.array_plan().items():
                plan[f"runs.{i}.{name}"] = (i, dtype, shape, required)
        with self.zip.open(info) as member:
            specs, data_size = tensors.read_header(member, info.file_size)
            for key, (i, dtype, shape, required) in plan.items():
                spec = specs.get(key)
                if spec is None and not required:
                    continue
                problem = tensors.check_fits(key.split(".", 2)[2], spec, dtype, shape)
                if problem:
                    raise _Refused(f"run {i + 1}: {problem}")
                needed += spec.end - spec.begin
            for i in range(len(checked)):
                if (f"runs.{i}.residual" in specs) != (f"runs.{i}.residual_mask" in specs):
                    raise _Refused(f"run {i + 1}: residual and residual_mask must be stored together")
            extra = data_size - needed
            if extra > limits.MAX_EXTRA_ARRAY_BYTES:
                raise _Refused(f"{ARRAYS_NAME} holds {extra:,} bytes of arrays its runs do not use")
            _check_memory(needed)
            keep = {key for key in plan if key in specs}
            return tensors.read_data(member, specs, keep)


def _check_memory(needed: int) -> None:
    if needed > limits.MAX_ARRAYS_BYTES:
        raise _Refused(f"its arrays need {format_bytes(needed)}, more than the limit of "
                       f"{format_bytes(limits.MAX_ARRAYS_BYTES)}")
    if needed < 1 << 30:
        return
    try:
        import psutil

        available = psutil.virtual_memory().available
    except Exception:  # noqa: BLE001 - no memory figure: nothing to compare with
        return
    if needed > available:
        raise _Refused(f"its arrays need {format_bytes(needed)} of memory and this machine has "
                       f"{format_bytes(available)} available")


# --- reading -----------------------------------------------------------------------------------


def _validated(doc: dict) -> SessionDoc:
    try:
        return SessionDoc.model_validate(doc)
    except ValidationError as exc:
        raise _Refused(f"{JSON_NAME} {first_error(exc)}") from None


def _checked_runs(doc: SessionDoc) -> list[CheckedRun]:
    """Every run of the document checked against the limits and the runs before it (forks)."""
    checked: list[CheckedRun] = []
    for i, run_doc in enumerate(doc.runs):
        try:
            checked.append(check_run(run_doc, i, checked))
        except ValueError as exc:
            raise _Refused(f"run {i + 1}: {exc}") from None
    return checked


def _read(path: Path) -> Session:
    with _Archive(path) as archive:
        doc = _validated(archive.document())
        checked = _checked_runs(doc)
        arrays = archive.arrays(checked)
    per_run: dict[int, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        _, index, name = key.split(".", 2)
        per_run.setdefault(int(index), {})[name] = array
    del arrays
    runs = []
    for i, run in enumerate(checked):
        try:
            trace = restore_run(run, per_run.pop(i, {}), owned=True)
        except ValueError as exc:
            raise _Refused(f"run {i + 1}: {exc}") from None
        try:
            rerun_requests(trace)  # the engine's own validators: a run that opens can be re-run
        except SettingsError as exc:
            raise _Refused(f"run {i + 1} could not be run again as recorded: {exc}") from None
        runs.append(trace)
    return Session(runs)


def _zip_problem(exc: zipfile.BadZipFile) -> str:
    text = str(exc)
    m = re.search(r"Bad CRC-32 for file '(.*)'", text)
    if m:
        return f"its member {m.group(1)!r} fails its checksum (its data is corrupt)"
    if "magic number" in text or "Truncated" in text or "header" in text.lower():
        return "the archive is damaged (a member's header is corrupt)"
    if "Overlapped entries" in text:
        return "the archive is damaged (its members overlap)"
    return "the archive is damaged"


def _explain(path: Path, exc: BaseException) -> SessionFileError:
    """Any failure while reading `path` as one line in words (the traceback of a surprise goes to the log)."""
    if isinstance(exc, SessionFileError):
        return exc
    if isinstance(exc, _Refused):
        return _refuse(path, str(exc))
    if isinstance(exc, DocumentError):
        return _refuse(path, str(exc))
    if isinstance(exc, tensors.ArraysError):
        return _refuse(path, f"{ARRAYS_NAME} is damaged ({exc})")
    if isinstance(exc, zlib.error):
        return _refuse(path, "the archive is damaged (its compressed data is corrupt)")
    if isinstance(exc, zipfile.BadZipFile):
        return _refuse(path, _zip_problem(exc))
    if isinstance(exc, zipfile.LargeZipFile):
        return _refuse(path, "the archive is damaged (it claims to need zip64 where it does not)")
    if isinstance(exc, EOFError):
        return _refuse(path, "the archive is damaged (a member ends before its declared size)")
    if isinstance(exc, NotImplementedError):
        m = re.search(r"zip file version (\d+(?:\.\d+)?)", str(exc))
        if m:
            return _refuse(path, f"it needs a zip reader of version {m.group(1)}; the archive is damaged or was not "
                                 "written by OPT Desktop")
        return _refuse(path, "it uses a zip feature this reader does not support; the archive is damaged or was "
                             "not written by OPT Desktop")
    if isinstance(exc, RecursionError):
        return _refuse(path, "its content is nested too deeply to be a session")
    if isinstance(exc, MemoryError):
        return _refuse(path, "there is not enough memory to read it")
    if isinstance(exc, OSError):
        return _refuse(path, exc.strerror or "it could not be read")
    log.error("unexpected failure reading %s", path, exc_info=exc)
    return _refuse(path, "it could not be read (an unexpected problem; the details are in the log)")


def load_session(path: str | Path) -> Session:
    """Read a whole session file; raises SessionFileError (one line) and nothing else."""
    path = Path(path)
    try:
        return _read(path)
    except Exception as exc:  # noqa: BLE001 - the promise is one clear line, whatever a crafted file does
        raise _explain(path, exc) from None


def read_summary(path: str | Path) -> SessionSummary:
    """Run count, save time and source file from session.json alone; raises SessionFileError and
    nothing else. The document is checked as fully as when the file is opened, so a file that
    passes here is not one that fails the moment it is restored."""
    path = Path(path)
    try:
        with _Archive(path) as archive:
            doc = _validated(archive.document())
        _checked_runs(doc)  # raises on a run that opening the file would reject
        saved_at = None
        if doc.saved_at:
            try:
                saved_at = datetime.fromisoformat(doc.saved_at)
                if saved_at.tzinfo is None:
                    saved_at = saved_at.replace(tzinfo=timezone.utc)
            except ValueError:
                saved_at = None
        source = Path(doc.source_file) if doc.source_file and "\x00" not in doc.source_file else None
        return SessionSummary(n_runs=len(doc.runs), saved_at=saved_at, source_file=source)
    except Exception as exc:  # noqa: BLE001
        raise _explain(path, exc) from None


__all__ = ["ARRAYS_NAME", "JSON_NAME", "SESSION_SUFFIX", "SessionFileError", "SessionSummary", "check_save_path",
           "load_session", "read_summary", "save_session", "session_document"]
