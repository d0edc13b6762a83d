"""Reading a session archive without trusting it: the zip's directory, its members and their sizes
are checked before anything is decompressed or allocated (session/limits.py holds the caps), and any
failure while reading becomes one line in words (`explain`)."""

from __future__ import annotations

import logging
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from . import limits, tensors
from ..formatting import format_bytes
from .file_errors import Refused, SessionFileError, refuse
from .jsondoc import DocumentError, read_json
from .schema import FORMAT, SCHEMA_VERSION, CheckedRun, migrate, versions

log = logging.getLogger(__name__)

JSON_NAME = "session.json"
ARRAYS_NAME = "arrays.safetensors"
ZIP_VERSION_READ = 63  # the highest "version needed to extract" Python's zipfile reads


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
        raise Refused(f"it holds {entries:,} members; a session holds two")
    if cd_size > limits.MAX_DIRECTORY_BYTES:
        raise Refused(f"its zip directory claims {cd_size:,} bytes, far more than two members need")


def _check_archive(z: zipfile.ZipFile, size: int) -> None:
    claimed = 22 + 20 + 56 + len(z.comment)  # end records (zip64 included) and the archive comment
    seen: set[str] = set()
    for info in z.infolist():
        name = info.filename
        if _unsafe_name(name):
            raise Refused(f"it holds a member named {name!r} that points outside its folder; refusing it")
        if name in seen:
            raise Refused(f"it holds two members named {name!r}; refusing to guess which one is meant")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise Refused(f"its member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise Refused(f"its member {name!r} uses an unsupported compression method")
        if info.extract_version > ZIP_VERSION_READ:
            raise Refused(f"it needs a zip reader of version {info.extract_version / 10:.1f}; the archive is "
                           "damaged or was not written by OPT Desktop")
        if info.file_size > limits.MAX_RATIO * info.compress_size + (64 << 10):
            raise Refused(f"its member {name!r} claims to expand from {info.compress_size:,} to "
                           f"{info.file_size:,} bytes, more than any real file does (a zip bomb?); refusing it")
        name_bytes = len(name.encode("utf-8"))
        # local header + data + data descriptor, then the central directory entry
        claimed += 30 + name_bytes + len(info.extra) + info.compress_size + 24
        claimed += 46 + name_bytes + len(info.extra) + len(info.comment)
    if size > claimed + limits.SLACK_BYTES:
        raise Refused(f"the file is {size:,} bytes but its contents account for only {claimed:,}; it is "
                       "damaged or has data added to it")


def _member(z: zipfile.ZipFile, name: str, limit: int) -> zipfile.ZipInfo:
    try:
        info = z.getinfo(name)
    except KeyError:
        raise Refused(f"it has no {name} (not an OPT Desktop session, or damaged)") from None
    if info.file_size > limit:
        raise Refused(f"{name} claims {info.file_size:,} bytes, more than the limit of {limit:,}")
    return info


def _chunks(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The member's bytes a chunk at a time; zipfile stops at the declared size and checks the CRC
    at the end, and this stops if more arrives than declared."""
    total = 0
    with z.open(info) as member:
        while chunk := member.read(limits.CHUNK_BYTES):
            total += len(chunk)
            if total > info.file_size:
                raise Refused(f"{info.filename} is longer than it claims")
            yield chunk


class Archive:
    """An open, checked session archive."""

    def __init__(self, path: Path):
        self.path = path
        try:
            if path.is_dir():
                raise Refused("it is a folder, not a session file")
            self.file = open(path, "rb")
        except FileNotFoundError:
            raise Refused("no such file") from None
        try:
            size = self.file.seek(0, 2)
            if not zipfile.is_zipfile(self.file):
                self.file.seek(0)
                if self.file.read(4) == b"PK\x03\x04":
                    raise Refused("the archive is damaged (its end is missing: the file was cut short, or data "
                                   "was added after it)")
                raise Refused("it is not an OPT Desktop session (not a zip archive)")
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

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def document(self) -> dict:
        """session.json, parsed with its limits, checked for format and version, migrated."""
        info = _member(self.zip, JSON_NAME, limits.MAX_JSON_BYTES)
        try:
            doc = read_json(_chunks(self.zip, info), JSON_NAME, limits.MAX_JSON_BYTES)
        except DocumentError as exc:
            raise Refused(str(exc)) from None
        if not isinstance(doc, dict):
            raise Refused(f"{JSON_NAME} is not a JSON object")
        if doc.get("format") != FORMAT:
            shown = repr(doc.get("format"))
            shown = shown if len(shown) <= 60 else shown[:59] + "…"
            raise Refused(f"it is not an OPT Desktop session ({JSON_NAME} has format {shown}, expected {FORMAT!r})")
        version = doc.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            shown = repr(version)
            raise Refused(f"{JSON_NAME} has no valid schema_version ({shown[:40]})")
        if version > SCHEMA_VERSION:
            app = doc.get("versions").get("app") if isinstance(doc.get("versions"), dict) else None
            app = app if isinstance(app, str) and len(app) <= 40 else None
            by = f"OPT Desktop {app}" if app else "a newer OPT Desktop"
            ours = versions()["app"]
            raise Refused(f"it was written by {by} (session schema {version}); this OPT Desktop {ours or ''} reads "
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
                    raise Refused(f"run {i + 1}: {problem}")
                needed += spec.end - spec.begin
            for i in range(len(checked)):
                if (f"runs.{i}.residual" in specs) != (f"runs.{i}.residual_mask" in specs):
                    raise Refused(f"run {i + 1}: residual and residual_mask must be stored together")
            extra = data_size - needed
            if extra > limits.MAX_EXTRA_ARRAY_BYTES:
                raise Refused(f"{ARRAYS_NAME} holds {extra:,} bytes of arrays its runs do not use")
            _check_memory(needed)
            keep = {key for key in plan if key in specs}
            return tensors.read_data(member, specs, keep)


def _check_memory(needed: int) -> None:
    if needed > limits.MAX_ARRAYS_BYTES:
        raise Refused(f"its arrays need {format_bytes(needed)}, more than the limit of "
                       f"{format_bytes(limits.MAX_ARRAYS_BYTES)}")
    if needed < 1 << 30:
        return
    try:
        import psutil

        available = psutil.virtual_memory().available
    except Exception:  # noqa: BLE001 - no memory figure: nothing to compare with
        return
    if needed > available:
        raise Refused(f"its arrays need {format_bytes(needed)} of memory and this machine has "
                       f"{format_bytes(available)} available")



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


def explain(path: Path, exc: BaseException) -> SessionFileError:
    """Any failure while reading `path` as one line in words (the traceback of a surprise goes to the log)."""
    if isinstance(exc, SessionFileError):
        return exc
    if isinstance(exc, Refused):
        return refuse(path, str(exc))
    if isinstance(exc, DocumentError):
        return refuse(path, str(exc))
    if isinstance(exc, tensors.ArraysError):
        return refuse(path, f"{ARRAYS_NAME} is damaged ({exc})")
    if isinstance(exc, zlib.error):
        return refuse(path, "the archive is damaged (its compressed data is corrupt)")
    if isinstance(exc, zipfile.BadZipFile):
        return refuse(path, _zip_problem(exc))
    if isinstance(exc, zipfile.LargeZipFile):
        return refuse(path, "the archive is damaged (it claims to need zip64 where it does not)")
    if isinstance(exc, EOFError):
        return refuse(path, "the archive is damaged (a member ends before its declared size)")
    if isinstance(exc, NotImplementedError):
        m = re.search(r"zip file version (\d+(?:\.\d+)?)", str(exc))
        if m:
            return refuse(path, f"it needs a zip reader of version {m.group(1)}; the archive is damaged or was not "
                                 "written by OPT Desktop")
        return refuse(path, "it uses a zip feature this reader does not support; the archive is damaged or was "
                             "not written by OPT Desktop")
    if isinstance(exc, RecursionError):
        return refuse(path, "its content is nested too deeply to be a session")
    if isinstance(exc, MemoryError):
        return refuse(path, "there is not enough memory to read it")
    if isinstance(exc, OSError):
        return refuse(path, exc.strerror or "it could not be read")
    log.error("unexpected failure reading %s", path, exc_info=exc)
    return refuse(path, "it could not be read (an unexpected problem; the details are in the log)")

