"""Damaged and forged session files, made from a good one: seeded mutants and hand-made hostile cases.

Shared by the fuzz test (tests/session/test_session_fuzz.py) and the benchmark
(benchmarks/session_file_bounds.py). No torch, no Qt: a mutant is bytes.
"""

from __future__ import annotations

import io
import json
import random
import struct
import warnings
import zipfile
import zlib

import numpy as np
from safetensors.numpy import save as save_arrays

KINDS = ("bytes", "zip", "json", "safetensors")


# --- building archives ---------------------------------------------------------------------------


def members_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {name: z.read(name) for name in z.namelist()}


def make_zip(members, level: int = 6) -> bytes:
    """members: {name: bytes} or [(name, bytes)] (a list may repeat a name)."""
    items = members.items() if isinstance(members, dict) else members
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as z:
        for name, blob in items:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Duplicate name" when a mutant repeats a member
                z.writestr(info, blob, compresslevel=level)
    return buffer.getvalue()


def split_safetensors(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8: 8 + n]), blob[8 + n:]


def join_safetensors(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


# --- seeded mutants ------------------------------------------------------------------------------


def _bytes_mutant(rng: random.Random, data: bytes) -> bytes:
    d = bytearray(data)
    how = rng.randrange(6)
    if how == 0:  # flip a few bytes anywhere
        for _ in range(rng.randint(1, 8)):
            d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
    elif how == 1:  # cut short
        del d[rng.randrange(1, len(d)):]
    elif how == 2:  # a stretch of zeros or ones
        at = rng.randrange(len(d))
        d[at: at + rng.randint(1, 64)] = bytes([rng.choice((0, 255))]) * rng.randint(1, 64)
    elif how == 3:  # junk inserted
        at = rng.randrange(len(d))
        d[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    elif how == 4:  # a stretch repeated
        a = rng.randrange(len(d))
        b = min(len(d), a + rng.randint(1, 512))
        d[b:b] = d[a:b]
    else:  # a byte of the last kilobyte (the zip's directory and end records) set at random
        d[rng.randrange(max(0, len(d) - 1024), len(d))] = rng.randrange(256)
    return bytes(d)


def _directory_entries(d: bytearray) -> list[int]:
    out, at = [], 0
    while (at := d.find(b"PK\x01\x02", at)) >= 0:
        out.append(at)
        at += 4
    return out


def _zip_mutant(rng: random.Random, data: bytes) -> bytes:
    members = members_of(data)
    how = rng.randrange(9)
    if how == 0:  # a second session.json or arrays.safetensors
        name = rng.choice(sorted(members))
        other = members[name][: len(members[name]) // 2]
        pairs = list(members.items()) + [(name, other)]
        rng.shuffle(pairs)
        return make_zip(pairs)
    if how == 1:  # a member missing, or an extra one
        pairs = list(members.items())
        if rng.random() < 0.5:
            pairs.pop(rng.randrange(len(pairs)))
        else:
            pairs.append((rng.choice(["notes.txt", "../x", "/abs", "session.json/.."]), b"extra"))
        return make_zip(pairs)
    if how == 2:  # stored instead of deflated, members swapped in order
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
            for name, blob in reversed(list(members.items())):
                z.writestr(name, blob)
        return buffer.getvalue()
    d = bytearray(data)
    entries = _directory_entries(d)
    if not entries:
        return _bytes_mutant(rng, data)
    entry = rng.choice(entries)
    local = struct.unpack_from("<I", d, entry + 42)[0]
    field = rng.randrange(7)
    value = rng.choice([0, 1, 20, 45, 63, 255, 0xFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)])
    if how == 3 or field == 0:  # version needed to extract
        struct.pack_into("<H", d, entry + 6, value & 0xFFFF)
        if local + 6 < len(d):
            struct.pack_into("<H", d, local + 4, value & 0xFFFF)
    elif field == 1:  # flags (encryption, data descriptor, utf-8)
        struct.pack_into("<H", d, entry + 8, rng.choice([1, 8, 0x800, 0x41, value & 0xFFFF]))
    elif field == 2:  # compression method
        struct.pack_into("<H", d, entry + 10, rng.choice([0, 1, 9, 12, 14, 93, 99, value & 0xFFFF]))
    elif field == 3:  # CRC
        struct.pack_into("<I", d, entry + 16, value)
    elif field == 4:  # compressed size
        struct.pack_into("<I", d, entry + 20, value)
    elif field == 5:  # uncompressed size: a member's declared size can lie
        struct.pack_into("<I", d, entry + 24, value)
    else:  # end record: number of entries or directory size/offset
        end = d.rfind(b"PK\x05\x06")
        off = rng.choice([8, 10, 12, 16])
        if off in (8, 10):
            struct.pack_into("<H", d, end + off, value & 0xFFFF)
        else:
            struct.pack_into("<I", d, end + off, value)
    return bytes(d)


_HOSTILE_VALUES = [None, True, -1, 0, 1, 3, 2**31, 2**63, 10**30, 1e8, -1e300, 3.0, 0.5, "", "x" * 5000,
                   "NaN", [], {}, [[[[1]]]], {"a": {"b": {"c": 1}}}, [0] * 50]
_LITERALS = ["NaN", "Infinity", "-Infinity", "1e999", "1" * 5000]


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:12]):
            yield from _paths(v, prefix + (i,))


def _set(doc, path, value):
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def _json_mutant(rng: random.Random, data: bytes) -> bytes:
    members = members_of(data)
    doc = json.loads(members["session.json"])
    paths = [p for p in _paths(doc) if p]
    how = rng.randrange(6)
    text = None
    if how == 0:  # a value replaced by one of another kind or range
        _set(doc, rng.choice(paths), rng.choice(_HOSTILE_VALUES))
    elif how == 1:  # a key removed, or a list shortened or lengthened
        path = rng.choice(paths)
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif isinstance(parent, list) and parent:
            if rng.random() < 0.5:
                parent.pop()
            else:
                parent.append(parent[-1])
    elif how == 2:  # a count that sizes arrays set far too high or inconsistent
        run = rng.choice(doc["runs"]) if doc["runs"] else {}
        key, value = rng.choice([
            (("model", "n_layers"), rng.choice([10**7, 200, 0, 2])), (("model", "n_heads"), rng.choice([10**6, 7, 1])),
            (("model", "hidden_size"), rng.choice([10**9, 12, 8])), (("model", "vocab_size"), rng.choice([3, 10**12])),
            (("model", "context_length"), rng.choice([5, 10**9])), (("inspect", "top_alternatives"), rng.choice([10**8, 2, 0])),
            (("n_prompt",), rng.choice([0, 10**7, 3])), (("max_new_tokens",), rng.choice([0, 10**9])),
            (("settings", "temperature"), rng.choice([0.0, -1, 200])), (("head_mask",), [[0, 0, 3.0]]),
            (("head_mask",), [[0, 0, 0.0], [0, 0, 0.5]]), (("hidden_positions",), [0]),
            (("mask_changes",), [{"index": 10**6, "head_mask": []}]), (("parent",), 5), (("fork_position",), 10**6),
            (("seed",), -5),
        ])
        if run and (len(key) == 1 or key[0] in run):
            _set(run, key, value)
    elif how == 3:  # a literal JSON has no room for, spliced into the text
        literal = rng.choice(_LITERALS)
        text = json.dumps(doc, indent=1)
        numbers = [i for i, line in enumerate(text.split("\n")) if line.rstrip(",").split(": ")[-1][:1].isdigit()]
        lines = text.split("\n")
        if numbers:
            i = rng.choice(numbers)
            head, _, tail = lines[i].rpartition(": ")
            lines[i] = f"{head}: {literal}" + ("," if tail.endswith(",") else "")
        text = "\n".join(lines)
    elif how == 4:  # deep nesting, or padding
        if rng.random() < 0.5:
            depth = rng.choice([30, 1000, 100_000])
            _set(doc, rng.choice(paths), "@@DEEP@@")
            text = json.dumps(doc).replace('"@@DEEP@@"', "[" * depth + "]" * depth)
        else:
            text = json.dumps(doc) + " " * rng.choice([10, 5 << 20])
    else:  # the schema version changed
        doc["schema_version"] = rng.choice([0, 1, 2, 4, 99, "3", None])
    if text is None:
        text = json.dumps(doc)
    members["session.json"] = text.encode()
    return make_zip(members)


def _safetensors_mutant(rng: random.Random, data: bytes) -> bytes:
    members = members_of(data)
    blob = members["arrays.safetensors"]
    header, body = split_safetensors(blob)
    names = [k for k in header if k != "__metadata__"]
    how = rng.randrange(7)
    name = rng.choice(names)
    entry = header[name]
    if how == 0:  # a shape that does not match the bytes, or a huge one
        entry["shape"] = [rng.choice([0, 1, 10**7, 2**40, -1]) for _ in range(rng.randint(0, 4))]
    elif how == 1:
        entry["dtype"] = rng.choice(["F64", "I8", "BF16", "X9", 5])
    elif how == 2:  # offsets that overlap, leave gaps or point past the end
        a, b = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[a, b + 8], [a + 4, b], [0, b], [b, a], [a, 2**62], [-1, b]])
    elif how == 3:  # an entry removed, or renamed
        del header[name]
        if rng.random() < 0.5:
            header[name + "_x"] = entry
    elif how == 4:  # the header length lies
        raw = blob
        n = struct.unpack("<Q", raw[:8])[0]
        lie = rng.choice([0, n - 1, n + 1, 2**63, len(raw) * 4])
        members["arrays.safetensors"] = struct.pack("<Q", lie) + raw[8:]
        return make_zip(members)
    elif how == 5:  # junk header
        members["arrays.safetensors"] = struct.pack("<Q", 20) + b'{"a": [[[[[[[[[[' + body[:8]
        return make_zip(members)
    else:  # body bytes changed (values out of range: token ids, bools)
        d = bytearray(body)
        a, b = entry["data_offsets"]
        if b > a:
            for _ in range(4):
                d[rng.randrange(a, b)] = 255
        body = bytes(d)
    members["arrays.safetensors"] = join_safetensors(header, body)
    return make_zip(members)


def mutant(seed: int, data: bytes) -> tuple[str, bytes]:
    """The seed-th mutant of a good session file: (kind, bytes)."""
    rng = random.Random(seed)
    kind = KINDS[seed % len(KINDS)]
    maker = {"bytes": _bytes_mutant, "zip": _zip_mutant, "json": _json_mutant, "safetensors": _safetensors_mutant}
    return kind, maker[kind](rng, data)


# --- the hand-made cases of issue 12 ----------------------------------------------------------------


def _first_run(data: bytes):
    members = members_of(data)
    return members, json.loads(members["session.json"])


def top_alternatives(data: bytes, value: int = 10**8) -> bytes:
    members, doc = _first_run(data)
    doc["runs"][0]["inspect"]["top_alternatives"] = value
    members["session.json"] = json.dumps(doc).encode()
    return make_zip(members)


def n_layers(data: bytes, value: int = 10**7) -> bytes:
    members, doc = _first_run(data)
    doc["runs"][0]["model"]["n_layers"] = value
    members["session.json"] = json.dumps(doc).encode()
    return make_zip(members)


def json_padding(data: bytes, size: int = 800 << 20) -> bytes:
    """session.json followed by `size` bytes of blank space, deflated (about 1000:1) without ever
    holding the padding whole."""
    members, doc = _first_run(data)
    text = json.dumps(doc).encode()
    deflated, total, crc = _deflate_stream([text] + [_BLANK] * (size // len(_BLANK)) + [_BLANK[: size % len(_BLANK)]])
    return _raw_zip([("session.json", deflated, (total, crc)),
                     ("arrays.safetensors", members["arrays.safetensors"], None)])


_BLANK = b" " * (4 << 20)


def _deflate_stream(chunks) -> tuple[bytes, int, int]:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts, total, crc = [], 0, 0
    for chunk in chunks:
        parts.append(compressor.compress(chunk))
        total += len(chunk)
        crc = zlib.crc32(chunk, crc)
    parts.append(compressor.flush())
    return b"".join(parts), total, crc


def zero_positions(data: bytes, n: int = 5_000_000) -> bytes:
    """A run that claims n prompt positions (all token 0), with zero-filled arrays of that length."""
    members, doc = _first_run(data)
    run = doc["runs"][0]
    run.update(prompt_ids=[0] * n, prompt_pieces=[""] * n, n_prompt=n, tokens=[], max_new_tokens=0,
               finished=None, text="")
    # The one-dimensional arrays at that length (the others would take gigabytes to make here).
    arrays = {f"runs.0.{name}": np.zeros(n, dtype) for name, dtype in
              (("token_ids", np.int64), ("logprob", np.float32), ("entropy", np.float32), ("rank", np.int64))}
    members["session.json"] = json.dumps(doc).encode()
    members["arrays.safetensors"] = save_arrays(arrays)
    return make_zip(members, level=1)


def zip_bomb_member(data: bytes, size: int = 2 << 30) -> bytes:
    """arrays.safetensors replaced by `size` bytes of zeros behind a valid header, deflated about 1000:1
    (under the ratio guard): a small file whose one array would take gigabytes."""
    members, _ = _first_run(data)
    header = {"runs.0.junk": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}
    raw = json.dumps(header).encode()
    zeros = bytes(16 << 20)
    chunks = [struct.pack("<Q", len(raw)) + raw] + [zeros] * (size // len(zeros)) + [zeros[: size % len(zeros)]]
    deflated, total, crc = _deflate_stream(chunks)
    return _raw_zip([("session.json", members["session.json"], None), ("arrays.safetensors", deflated, (total, crc))])


def _raw_zip(items) -> bytes:
    """A zip from pre-deflated members: (name, data, None) is deflated here; (name, deflated, (size, crc))
    is written as is (zip64 where needed)."""
    out = bytearray()
    directory = bytearray()
    for name, blob, known in items:
        if known is None:
            size, crc = len(blob), zlib.crc32(blob)
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            blob = c.compress(blob) + c.flush()
        else:
            size, crc = known
        nb = name.encode()
        extra = struct.pack("<HHQQ", 1, 16, size, len(blob))
        offset = len(out)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, 8, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                           len(nb), len(extra)) + nb + extra + blob
        cd_extra = struct.pack("<HHQQQ", 1, 24, size, len(blob), offset)
        directory += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, 0, 8, 0, 0x21, crc, 0xFFFFFFFF,
                                 0xFFFFFFFF, len(nb), len(cd_extra), 0, 0, 0, 0, 0xFFFFFFFF) + nb + cd_extra
    cd_offset = len(out)
    out += directory
    z64_at = len(out)
    out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, len(items), len(items), len(directory),
                       cd_offset)
    out += struct.pack("<4sIQI", b"PK\x06\x07", 0, z64_at, 1)
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(out)


def declare_size(data: bytes, member: str, size: int) -> bytes:
    """Forge the uncompressed size `member` declares (in the directory and in its zip64 extra field)."""
    d = bytearray(data)
    for entry in _directory_entries(d):
        name_len, extra_len = struct.unpack_from("<HH", d, entry + 28)
        if d[entry + 46: entry + 46 + name_len].decode() != member:
            continue
        if struct.unpack_from("<I", d, entry + 24)[0] == 0xFFFFFFFF:  # zip64: the size is in the extra field
            extra = entry + 46 + name_len
            struct.pack_into("<Q", d, extra + 4, size)
        else:
            struct.pack_into("<I", d, entry + 24, size)
    return bytes(d)


HAND_MADE = {
    "top_alternatives = 1e8": top_alternatives,
    "800 MB of JSON padding": json_padding,
    "5 million zero positions": zero_positions,
    "n_layers = 1e7": n_layers,
    "2 GiB zero array (1000:1)": zip_bomb_member,
}
