"""arrays.safetensors read from a stream: the header first, checked in full, then each array read
straight into its own numpy buffer.

The safetensors package loads a file only from bytes held whole (or from a plain file on disk), so
a reader would hold the decompressed member and a copy of every array. Here nothing is allocated
before the header has been checked against the layout the format requires (known dtypes, shapes
that match the byte ranges, ranges that tile the data without gaps or overlaps) and against what
session.json says each array must be; arrays of other names are skipped, never kept. Writing still
goes through safetensors.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import BinaryIO, Mapping

import numpy as np

from . import limits
from .jsondoc import DocumentError, depth

# safetensors dtype names -> little-endian numpy dtypes (BF16 has no numpy twin and is never written here).
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "u1"}
NAMES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
         np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.bool_): "BOOL"}


class ArraysError(ValueError):
    """The arrays member is damaged; str() says how in words (the reader adds the member's name)."""


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # the safetensors dtype name
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.bool_) if self.kind == "BOOL" else np.dtype(DTYPES[self.kind])

    def describe(self) -> str:
        return f"{np.dtype(self.dtype).name} {self.shape}"


def _read_exact(stream: BinaryIO, n: int, what: str) -> bytes:
    parts, left = [], n
    while left:
        chunk = stream.read(min(left, limits.CHUNK_BYTES))
        if not chunk:
            raise ArraysError(f"it ends inside its {what}")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_header(stream: BinaryIO, member_size: int) -> tuple[dict[str, Spec], int]:
    """The arrays' specs by name and the size of their data section; checks the layout in full."""
    (n,) = struct.unpack("<Q", _read_exact(stream, 8, "header length"))
    if n > min(limits.MAX_ARRAYS_HEADER_BYTES, max(member_size - 8, 0)):
        raise ArraysError(f"it claims a header of {n:,} bytes, more than it can hold")
    raw = _read_exact(stream, n, "header")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ArraysError("its header is not valid JSON") from None
    if not isinstance(header, dict) or depth(header) > 3:
        raise ArraysError("its header is not a table of arrays")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise ArraysError("its metadata is not a table of texts")
    specs: dict[str, Spec] = {}
    for name, entry in header.items():
        specs[name] = _spec(name, entry)
    spans = sorted((s.begin, s.end, s.name) for s in specs.values())
    at = 0
    for begin, end, name in spans:
        if begin != at:
            raise ArraysError(f"the array {name[:80]!r} does not follow the one before it "
                              "(the data has a gap or an overlap)")
        at = end
    if 8 + n + at != member_size:
        raise ArraysError(f"it is {member_size:,} bytes, but its header accounts for {8 + n + at:,}")
    return specs, at


def _spec(name: str, entry) -> Spec:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ArraysError(f"the entry for {name[:80]!r} is malformed")
    kind, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if kind not in DTYPES:
        raise ArraysError(f"the array {name[:80]!r} has the unknown dtype {str(kind)[:20]!r}")
    if (not isinstance(shape, list) or len(shape) > limits.MAX_ARRAY_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape)):
        raise ArraysError(f"the array {name[:80]!r} has an impossible shape")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) and 0 <= o < 1 << 50 for o in offsets)):
        raise ArraysError(f"the array {name[:80]!r} has impossible byte offsets")
    begin, end = offsets
    size = math.prod(shape) * np.dtype(DTYPES[kind]).itemsize
    if end - begin != size:
        raise ArraysError(f"the array {name[:80]!r} is {tuple(shape)} {kind} ({size:,} bytes) but spans "
                          f"{end - begin:,} bytes")
    return Spec(name, kind, tuple(shape), begin, end)


def read_data(stream: BinaryIO, specs: Mapping[str, Spec], keep: set[str]) -> dict[str, np.ndarray]:
    """Read the data section (after read_header): the arrays named in `keep`, each into a fresh
    buffer; others are read past. The stream is read to its end so the zip's checksum is checked."""
    out: dict[str, np.ndarray] = {}
    for spec in sorted(specs.values(), key=lambda s: s.begin):
        if spec.name not in keep:
            _skip(stream, spec.end - spec.begin, spec.name)
            continue
        array = np.empty(spec.shape, np.uint8 if spec.kind == "BOOL" else np.dtype(DTYPES[spec.kind]))
        view = memoryview(array.reshape(-1).view(np.uint8))
        filled = 0
        while filled < len(view):
            got = stream.readinto(view[filled: filled + limits.CHUNK_BYTES])
            if not got:
                raise ArraysError(f"it ends inside the array {spec.name!r}")
            filled += got
        if spec.kind == "BOOL":
            if array.size and array.max() > 1:
                raise ArraysError(f"the array {spec.name!r} holds values that are neither true nor false")
            array = array.view(np.bool_)
        if not array.dtype.isnative:  # safetensors is little-endian
            array = array.astype(array.dtype.newbyteorder("="))
        out[spec.name] = array
    if stream.read(1):
        raise ArraysError("it goes on past its last array")
    return out


def _skip(stream: BinaryIO, n: int, name: str) -> None:
    while n:
        chunk = stream.read(min(n, limits.CHUNK_BYTES))
        if not chunk:
            raise ArraysError(f"it ends inside the array {name!r}")
        n -= len(chunk)


def check_fits(name: str, spec: Spec | None, dtype, shape: tuple[int, ...]) -> str | None:
    """None when `spec` is the array the format expects, else why not (in words)."""
    expected = f"{np.dtype(dtype).name} {tuple(shape)}"
    if spec is None:
        return f"the array {name} is missing"
    if spec.dtype != np.dtype(dtype) or spec.shape != tuple(shape):
        return f"the array {name} is {spec.describe()}, expected {expected}"
    return None


__all__ = ["ArraysError", "DTYPES", "NAMES", "DocumentError", "Spec", "check_fits", "read_data", "read_header"]
