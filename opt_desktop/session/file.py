"""The .optsession file: a zip of session.json and arrays.safetensors (docs/session-format.md).

Only json and safetensors are ever parsed, never pickle: a session someone sent cannot run code.
A file is read in full before anything is returned, so a bad one leaves nothing half-loaded.

Reading never trusts a count before it is checked: session/archive.py bounds the archive and its
members before a byte is decompressed; here session.json is validated with hard limits
(session/limits.py) and every run is checked before its arrays are read. Every refusal is one
SessionFileError line naming the file and the problem in words.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydantic import ValidationError
from safetensors.numpy import save as save_arrays

from . import limits
from ..engine.messages.errors import SettingsError
from ..atomic import write_atomic
from .archive import ARRAYS_NAME, JSON_NAME, Archive, explain
from .file_errors import Refused, SessionFileError
from .schema import FORMAT, SCHEMA_VERSION, CheckedRun, SessionDoc, check_run, first_error, restore_run, run_document, versions
from .requests import rerun_requests
from .session import Session

log = logging.getLogger(__name__)

SESSION_SUFFIX = ".optsession"

# Kept for callers and tests that lower them; the full set lives in session/limits.py.
MAX_JSON_BYTES = limits.MAX_JSON_BYTES
MAX_ARRAYS_BYTES = limits.MAX_ARRAYS_BYTES
MAX_RATIO = limits.MAX_RATIO


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


# --- reading -----------------------------------------------------------------------------------


def _validated(doc: dict) -> SessionDoc:
    try:
        return SessionDoc.model_validate(doc)
    except ValidationError as exc:
        raise Refused(f"{JSON_NAME} {first_error(exc)}") from None


def _checked_runs(doc: SessionDoc) -> list[CheckedRun]:
    """Every run of the document checked against the limits and the runs before it (forks)."""
    checked: list[CheckedRun] = []
    for i, run_doc in enumerate(doc.runs):
        try:
            checked.append(check_run(run_doc, i, checked))
        except ValueError as exc:
            raise Refused(f"run {i + 1}: {exc}") from None
    return checked


def _read(path: Path) -> Session:
    with Archive(path) as archive:
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
            raise Refused(f"run {i + 1}: {exc}") from None
        try:
            rerun_requests(trace)  # the engine's own validators: a run that opens can be re-run
        except SettingsError as exc:
            raise Refused(f"run {i + 1} could not be run again as recorded: {exc}") from None
        runs.append(trace)
    return Session(runs)


def load_session(path: str | Path) -> Session:
    """Read a whole session file; raises SessionFileError (one line) and nothing else."""
    path = Path(path)
    try:
        return _read(path)
    except Exception as exc:  # noqa: BLE001 - the promise is one clear line, whatever a crafted file does
        raise explain(path, exc) from None


def read_summary(path: str | Path) -> SessionSummary:
    """Run count, save time and source file from session.json alone; raises SessionFileError and
    nothing else. The document is checked as fully as when the file is opened, so a file that
    passes here is not one that fails the moment it is restored."""
    path = Path(path)
    try:
        with Archive(path) as archive:
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
        raise explain(path, exc) from None


__all__ = ["ARRAYS_NAME", "JSON_NAME", "SESSION_SUFFIX", "SessionFileError", "SessionSummary", "check_save_path",
           "load_session", "read_summary", "save_session", "session_document"]
