"""session.json read from a stream of chunks, with its size, padding, density and numbers bounded.

Every limit is checked while the text arrives, so a padded or forged document is refused after a
few megabytes, never after it has been held whole. Numbers must be finite (JSON has no NaN; a
`NaN` or `Infinity` literal, or `1e999`, would come back as one that cannot be saved again).
"""

from __future__ import annotations

import json
from typing import Iterable

from . import limits


class DocumentError(ValueError):
    """The document is not acceptable; str() says why in words (without the file's name)."""


_WHITESPACE = (b" ", b"\n", b"\r", b"\t")
_VALUE_MARKS = (b",", b":", b"{", b"[")


def _reject_constant(name: str):
    raise DocumentError(f"it holds the value {name}, which JSON does not allow")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise DocumentError(f"it holds the number {text[:40]}, too large to be a real value")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > limits.MAX_JSON_INT_DIGITS:
        raise DocumentError(f"it holds an integer with {len(text)} digits, more than any real value has")
    return int(text)


def read_json(chunks: Iterable[bytes], name: str, limit: int = limits.MAX_JSON_BYTES):
    """Parse the UTF-8 JSON text arriving in `chunks`; raises DocumentError naming `name` (e.g.
    'session.json') and the problem in words."""
    buf = bytearray()
    space = marks = 0
    for chunk in chunks:
        buf += chunk
        if len(buf) > limit:
            raise DocumentError(f"{name} is larger than the limit of {limit:,} bytes")
        space += sum(chunk.count(c) for c in _WHITESPACE)
        solid = len(buf) - space
        if space > (1 << 20) + limits.MAX_WHITESPACE_RATIO * solid:
            raise DocumentError(f"{name} is mostly blank space ({space:,} blank bytes for {solid:,} others): "
                                "it was padded, not written by OPT Desktop")
        marks += sum(chunk.count(c) for c in _VALUE_MARKS)
        if marks > 65_536 + solid / limits.MIN_BYTES_PER_VALUE:
            raise DocumentError(f"{name} packs more values into its text than a session holds "
                                f"({marks:,} in {solid:,} bytes)")
    try:
        text = buf.decode("utf-8")
    except UnicodeDecodeError:
        raise DocumentError(f"{name} is not UTF-8 text") from None
    del buf
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except DocumentError as exc:
        raise DocumentError(f"{name} is not acceptable: {exc}") from None
    except RecursionError:
        raise DocumentError(f"{name} is nested too deeply to be a session") from None
    except json.JSONDecodeError as exc:
        raise DocumentError(f"{name} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except ValueError as exc:  # int() of a string of digits past Python's conversion limit, and the like
        raise DocumentError(f"{name} is not valid JSON ({exc})") from None


def depth(value, limit: int = limits.MAX_JSON_DEPTH) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0); stops counting past `limit`."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level) for child in children)
    return deepest
