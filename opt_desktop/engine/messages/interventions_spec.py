"""Interventions as plain data: parse, check and describe head masks and hidden positions. No torch.

The CLI parses what a user typed; the engine checks requests against the loaded model; the GUI
can run the same checks before torch has loaded. Every failure is one `SettingsError` line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Sequence

from .errors import SettingsError
from .settings import HeadScale

_ITEM = re.compile(r"^(\*|\d+)\s*:\s*(\*|\d+)\s*(?:=\s*(\S+))?$")
_RANGE = re.compile(r"^(\d+)\s*(?:-\s*(\d+))?$")
_MAX_SCALE = 2.0


def _triples(mask: Iterable) -> list[tuple[int, int, float]]:
    """HeadScale items or (layer, head, scale) tuples (as Started/HeadMaskChanged carry them)."""
    out = []
    for item in mask:
        if isinstance(item, HeadScale):
            out.append((item.layer, item.head, float(item.scale)))
        else:
            layer, head, scale = item
            out.append((int(layer), int(head), float(scale)))
    return out


def normalize_head_mask(mask: Iterable) -> tuple[HeadScale, ...]:
    """One entry per head, ordered by (layer, head); a later entry for the same head wins
    (so "7:*,7:3=0.5" ablates layer 7 except head 3, which is halved)."""
    chosen: dict[tuple[int, int], float] = {}
    for layer, head, scale in _triples(mask):
        chosen[(layer, head)] = scale
    return tuple(HeadScale.parse(layer=l, head=h, scale=s) for (l, h), s in sorted(chosen.items()))


def mask_triples(mask: Iterable) -> tuple[tuple[int, int, float], ...]:
    """The mask as the (layer, head, scale) tuples that events carry."""
    return tuple(_triples(mask))


def check_head_mask(mask: Sequence[HeadScale], n_layers: int, n_heads: int, label: str = "this model") -> None:
    """Raise SettingsError naming the first head the model does not have."""
    for layer, head, _ in _triples(mask):
        if layer >= n_layers:
            raise SettingsError(f"Layer {layer} does not exist: {label} has {n_layers} layers (0-{n_layers - 1}).")
        if head >= n_heads:
            raise SettingsError(f"Head {layer}:{head} does not exist: {label} has {n_heads} heads per layer "
                                f"(0-{n_heads - 1}).")


def check_hidden_positions(positions: Iterable[int], n_prompt: int, what: str = "prompt") -> tuple[int, ...]:
    """Sorted, de-duplicated prompt positions to hide from attention, or SettingsError.

    Position 0 (OPT's leading `</s>`) cannot be hidden: it is the one key every query can see, so
    hiding it would leave the first query with nothing to attend to (its softmax row would be
    empty). Any other prompt position may be hidden, the last one included: its own query still
    sees the tokens before it, and the generated tokens simply cannot look back at it.
    """
    out = sorted(set(int(p) for p in positions))
    for p in out:
        if p == 0:
            raise SettingsError("Position 0 (the leading </s>) cannot be hidden: every token must be able "
                                "to attend to at least one earlier position.")
        if not 0 < p < n_prompt:
            where = f"positions 1-{n_prompt - 1}" if n_prompt > 1 else "no position"
            raise SettingsError(f"Hidden position {p} is outside the {what} of {n_prompt} tokens "
                                f"({where} can be hidden).")
    return tuple(out)


# --- text a person typed ------------------------------------------------------------------------

def _counted(what: str, n: int | None, item: str) -> range:
    if n is None:
        raise SettingsError(f"'{item}' uses *, which needs the model's number of {what}: load a model first.")
    return range(n)


def _index(text: str, what: str, n: int | None, item: str) -> range:
    if text == "*":
        return _counted(what, n, item)
    value = int(text)
    if n is not None and value >= n:
        singular = what[:-1]
        raise SettingsError(f"'{item}': {singular} {value} does not exist (the model has {n} {what}, 0-{n - 1}).")
    return range(value, value + 1)


def _scale(text: str | None, item: str) -> float:
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"'{item}': the scale after = must be a number from 0 to 2.") from None
    if not 0.0 <= value <= _MAX_SCALE:
        raise SettingsError(f"'{item}': the scale {text} is outside 0-2 (0 ablates, 1 leaves the head as it is).")
    return value


def _from_json(path: Path, n_layers: int | None, n_heads: int | None) -> tuple[HeadScale, ...]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SettingsError(f"{path} is not a readable head-mask JSON file ({exc}).") from None
    if not isinstance(data, list):
        raise SettingsError(f'{path}: expected a JSON list like [{{"layer": 3, "head": 0, "scale": 0}}].')
    mask = []
    named: dict[tuple[int, int], int] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise SettingsError(f'{path}: entry {i} is not an object like {{"layer": 3, "head": 0}}.')
        try:
            item = HeadScale.parse(**entry)
        except SettingsError as exc:
            raise SettingsError(f"{path}: entry {i}: {exc}") from None
        key = (item.layer, item.head)
        if key in named:
            raise SettingsError(f"{path}: entries {named[key]} and {i} both name head {item.layer}:{item.head}; "
                                "name each head once.")
        named[key] = i
        mask.append(item)
    if n_layers is not None and n_heads is not None:
        check_head_mask(mask, n_layers, n_heads)
    return normalize_head_mask(mask)


def parse_head_mask(text: str, n_layers: int | None = None, n_heads: int | None = None) -> tuple[HeadScale, ...]:
    """Parse "3:0,3:5,7:*", "*:4", "3:0=0.5" (scale after =, default 0 = ablate) or a JSON file path.

    "*" expands with `n_layers` / `n_heads`, which are also used, when given, to check ranges.
    Returns one HeadScale per head, ordered by (layer, head). A later item overrides what an earlier
    wildcard gave a head ("7:*,7:3=0.5"), but a head named explicitly twice ("1:0,1:0=0.5") is
    refused, naming the head: which of the two was meant cannot be known.
    """
    text = text.strip()
    if not text:
        return ()
    path = Path(text).expanduser()
    if text.lower().endswith(".json") or path.is_file():
        if not path.is_file():
            raise SettingsError(f"{text}: no such head-mask file.")
        return _from_json(path, n_layers, n_heads)
    mask = []
    explicit: dict[tuple[int, int], str] = {}  # heads named without a wildcard -> the item naming them
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        m = _ITEM.match(item)
        if m is None:
            raise SettingsError(f"'{item}' is not a head: write layer:head, e.g. 3:0, 7:* (a whole layer), "
                                "*:4 (head 4 of every layer) or 3:5=0.5 (scaled).")
        layers = _index(m.group(1), "layers", n_layers, item)
        heads = _index(m.group(2), "heads", n_heads, item)
        scale = _scale(m.group(3), item)
        if m.group(1) != "*" and m.group(2) != "*":
            key = (layers[0], heads[0])
            if key in explicit:
                raise SettingsError(f"Head {key[0]}:{key[1]} is named twice ('{explicit[key]}' and '{item}'): "
                                    "name each head once.")
            explicit[key] = item
        mask.extend(HeadScale(layer=l, head=h, scale=scale) for l in layers for h in heads)
    return normalize_head_mask(mask)


def parse_positions(text: str) -> tuple[int, ...]:
    """Parse "1,2,5-7" into sorted, de-duplicated positions (1, 2, 5, 6, 7)."""
    out: set[int] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        m = _RANGE.match(item)
        if m is None:
            raise SettingsError(f"'{item}' is not a position: write numbers and ranges, e.g. 1,2,5-7.")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        if last < first:
            raise SettingsError(f"'{item}' is an empty range: write the smaller position first.")
        out.update(range(first, last + 1))
    return tuple(sorted(out))


def format_head_mask(mask: Iterable, n_layers: int | None = None, n_heads: int | None = None) -> str:
    """Compact text for run summaries, e.g. "3:0, 3:5 ×0.5, 7:*" ("" for an empty mask).

    Ablation (scale 0) has no suffix; a whole layer at one scale becomes "L:*" when `n_heads` is
    given, and one head at one scale in every layer "*:H" when `n_layers` is given.
    """
    items = normalize_head_mask(mask)
    by_layer: dict[int, dict[int, float]] = {}
    for it in items:
        by_layer.setdefault(it.layer, {})[it.head] = it.scale

    def suffix(scale: float) -> str:
        return "" if scale == 0.0 else f" ×{scale:g}"

    parts: list[tuple[tuple[int, int], str]] = []  # (sort key, text)
    done: set[tuple[int, int]] = set()
    if n_layers is not None:
        # A head scaled alike in every layer: "*:H" (unless every layer is whole, which "L:*" says better).
        heads = {h for hs in by_layer.values() for h in hs}
        for h in sorted(heads):
            scales = {by_layer.get(l, {}).get(h) for l in range(n_layers)}
            if len(scales) == 1 and None not in scales:
                layer_whole = n_heads is not None and all(len(by_layer.get(l, {})) == n_heads for l in range(n_layers))
                if not layer_whole:
                    parts.append(((-1, h), f"*:{h}{suffix(scales.pop())}"))
                    done.update((l, h) for l in range(n_layers))
    for layer, heads in sorted(by_layer.items()):
        rest = {h: s for h, s in heads.items() if (layer, h) not in done}
        if n_heads is not None and len(heads) == n_heads and len(rest) == n_heads and len(set(rest.values())) == 1:
            parts.append(((layer, -1), f"{layer}:*{suffix(next(iter(rest.values())))}"))
            continue
        parts.extend(((layer, h), f"{layer}:{h}{suffix(s)}") for h, s in sorted(rest.items()))
    return ", ".join(text for _, text in sorted(parts))
