"""The wire format between the window and its engine process: JSON plus raw array bytes, no pickle.

A frame is a 16-byte header (b"OPT" and the protocol version as one byte, then the JSON length as
a little-endian uint32 and the blob length as a little-endian uint64), the JSON text (UTF-8), then
the blob. Every frame names its version, so a peer of another version is recognised by its first
frame (version 1 began its frames with b"OPTE" and had a uint32 blob length). In the JSON, values
that JSON cannot hold are tagged objects:

    {"$t": "Started", ...fields}            a registered dataclass (only these types are ever built)
    {"$m": "GenerationRequest", "v": {...}} a registered pydantic model, as its model_dump(mode="json")
    {"$a": [offset, nbytes, "<f4", [2, 3]]} a numpy array stored in the blob at offset
    {"$tuple": [...]}                        a tuple (lists stay lists)
    {"$d": [[key, value], ...]}              a dict whose keys are not all strings
    {"$f": "nan" | "inf" | "-inf"}           a float JSON cannot write

Decoding builds only registered types from their declared fields, so a frame can never run code.
docs/engine-protocol.md describes the messages.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from typing import Any, BinaryIO

import numpy as np

PROTOCOL_VERSION = 2  # of the frames and of the messages (process_messages.py): bump it when either changes
MAGIC = b"OPT"
_VERSION_1 = b"OPTE"  # how version 1's frames began (its header had no version field)
_HEADER = struct.Struct("<3sBIQ")
MAX_JSON = 64 * 2**20  # a frame's JSON: events are small; a session-sized frame would be a bug
MAX_BLOB = 8 * 2**30  # arrays: full attention rows of a long prompt can be large, but not unbounded

_DATACLASSES: dict[str, type] = {}
_MODELS: dict[str, type] = {}


class ProtocolError(Exception):
    """What arrived is not an engine frame of this protocol (a stray print, a garbled pipe)."""


class VersionMismatch(ProtocolError):
    """The other end speaks another version of the protocol."""

    def __init__(self, version: int):
        super().__init__(f"the other end speaks protocol version {version}, this one {PROTOCOL_VERSION}")
        self.version = version


class Unsendable(TypeError):
    """A message that cannot be written as a frame: a type that is not registered, or too large."""


def register(*types: type) -> None:
    """Allow these dataclasses or pydantic models on the wire (by class name)."""
    for t in types:
        if dataclasses.is_dataclass(t):
            _DATACLASSES[t.__name__] = t
        elif hasattr(t, "model_validate"):
            _MODELS[t.__name__] = t
        else:
            raise TypeError(f"{t.__name__} is neither a dataclass nor a pydantic model")


class _Writer:
    def __init__(self) -> None:
        self.parts: list[memoryview] = []
        self.size = 0

    def encode(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)):
            v = float(value)
            return v if math.isfinite(v) else {"$f": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
        if isinstance(value, np.ndarray):
            data = memoryview(np.ascontiguousarray(value)).cast("B")
            entry = [self.size, data.nbytes, value.dtype.str, list(value.shape)]
            self.parts.append(data)
            self.size += data.nbytes
            return {"$a": entry}
        if isinstance(value, tuple):
            return {"$tuple": [self.encode(v) for v in value]}
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: self.encode(v) for k, v in value.items()}
            return {"$d": [[self.encode(k), self.encode(v)] for k, v in value.items()]}
        name = type(value).__name__
        if name in _DATACLASSES and type(value) is _DATACLASSES[name]:
            out = {"$t": name}
            for f in dataclasses.fields(value):
                out[f.name] = self.encode(getattr(value, f.name))
            return out
        if name in _MODELS and type(value) is _MODELS[name]:
            return {"$m": name, "v": value.model_dump(mode="json")}
        raise Unsendable(f"{name} cannot be sent to the engine process (not registered)")


def encode(message: Any) -> list:
    """The frame for `message` as a list of buffers to write in order (the arrays are not copied).
    Unsendable for a message that no frame can hold; nothing is written then."""
    w = _Writer()
    try:
        text = json.dumps(w.encode(message), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (ValueError, RecursionError) as exc:  # a circular structure; json's own refusals
        raise Unsendable(f"{type(message).__name__} cannot be written as JSON ({exc})") from None
    if len(text) > MAX_JSON or w.size > MAX_BLOB:
        raise Unsendable(f"a frame of {len(text):,} bytes of JSON and {w.size:,} bytes of arrays is larger than "
                         f"this protocol allows ({MAX_JSON:,} and {MAX_BLOB:,})")
    return [_HEADER.pack(MAGIC, PROTOCOL_VERSION, len(text), w.size), text, *w.parts]


def write(stream: BinaryIO, message: Any) -> None:
    for part in encode(message):
        stream.write(part)
    stream.flush()


def _read_exactly(stream: BinaryIO, n: int, check=None) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = stream.readinto(view[got:])
        if not k:
            raise EOFError("the engine process closed the pipe")
        got += k
        if check is not None:
            check(bytes(buf[:got]))
    return buf


def _check_start(start: bytes) -> None:
    """Judge a frame by its first bytes, as they arrive: a stray line ("Hello\n") is refused at
    once rather than waited on until 16 bytes have come."""
    version = start[len(MAGIC)] if len(start) > len(MAGIC) else None
    if start[:4] == _VERSION_1:
        raise VersionMismatch(1)
    # A version is a small number: "OPTIONS" on a line of its own is text, not a frame of version 73.
    if not MAGIC.startswith(start[:len(MAGIC)]) or (version is not None and version >= 0x20):
        shown = start[:len(MAGIC) + 1].decode("utf-8", "replace")
        raise ProtocolError(f"it began with {shown!r}")
    if version is not None and version != PROTOCOL_VERSION:
        raise VersionMismatch(version)


def read(stream: BinaryIO) -> Any:
    """The next message; EOFError at the end of the stream, ProtocolError for anything malformed
    (VersionMismatch for a frame of another version)."""
    header = _read_exactly(stream, _HEADER.size, _check_start)
    _magic, _version, n_json, n_blob = _HEADER.unpack(header)
    if n_json > MAX_JSON or n_blob > MAX_BLOB:
        raise ProtocolError(f"a frame of {n_json + n_blob:,} bytes is larger than this protocol allows")
    text = _read_exactly(stream, n_json)
    blob = _read_exactly(stream, n_blob) if n_blob else bytearray()
    try:
        return _decode(json.loads(text), memoryview(blob))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ProtocolError(f"a malformed engine frame ({exc})") from None


def _decode(value: Any, blob: memoryview) -> Any:
    if isinstance(value, list):
        return [_decode(v, blob) for v in value]
    if not isinstance(value, dict):
        return value
    if "$a" in value:
        offset, nbytes, dtype, shape = value["$a"]
        dt = np.dtype(dtype)
        if dt.hasobject or offset < 0 or nbytes < 0 or offset + nbytes > len(blob):
            raise ValueError("an array outside the frame")
        count = int(np.prod(shape)) if shape else 1
        if count * dt.itemsize != nbytes:
            raise ValueError("an array whose shape does not match its bytes")
        return np.frombuffer(blob[offset:offset + nbytes], dtype=dt).reshape(shape)
    if "$tuple" in value:
        return tuple(_decode(v, blob) for v in value["$tuple"])
    if "$d" in value:
        return {_decode(k, blob): _decode(v, blob) for k, v in value["$d"]}
    if "$f" in value:
        return float(value["$f"])
    if "$t" in value:
        cls = _DATACLASSES.get(value["$t"])
        if cls is None:
            raise ValueError(f"unknown type {value['$t']!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _decode(v, blob) for k, v in value.items() if k != "$t" and k in names})
    if "$m" in value:
        cls = _MODELS.get(value["$m"])
        if cls is None:
            raise ValueError(f"unknown type {value['$m']!r}")
        return cls.model_validate(value["v"])
    return {k: _decode(v, blob) for k, v in value.items()}
