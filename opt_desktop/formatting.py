"""How numbers are written for a person, the same in the window, the CLI and the exports. No Qt, no torch."""

from __future__ import annotations

import math
from typing import Iterable

# Surprisal (bits) at which a token's shading is full: p = 1/1024 and anything rarer look the same.
FULL_SHADE_BITS = 10.0
# Opacity of the full shade: text stays readable on it, and it stays lighter than a selection.
FULL_SHADE_OPACITY = 0.47

_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(n: float | None) -> str:
    """'512 B', '48.8 KiB', '146 MiB', '2.5 GiB': binary units, three significant figures; '–' for None."""
    if n is None:
        return "–"
    size = float(n)
    for unit in _BYTE_UNITS:
        if abs(size) < 1024 or unit == _BYTE_UNITS[-1]:
            if unit == "B":
                return f"{size:.0f} B"
            return f"{size:.0f} {unit}" if abs(size) >= 100 else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_count(n: int) -> str:
    """'125M', '1.3B', '48.2K': parameter counts and the like."""
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    if n >= 1e6:
        return f"{n / 1e6:.0f}M" if n >= 1e8 else f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(n)


def surprise_opacity(logprob: float) -> float:
    """Opacity of the shade behind a token of this log-probability (nats): 0 for a certain token,
    FULL_SHADE_OPACITY from FULL_SHADE_BITS of surprise on, 0 where nothing predicted it (NaN).
    The output view and the HTML report shade tokens alike with it."""
    if not math.isfinite(logprob):
        return 0.0
    bits = -logprob / math.log(2)
    return min(max(bits / FULL_SHADE_BITS, 0.0), 1.0) * FULL_SHADE_OPACITY


def position_ranges(positions: Iterable[int]) -> str:
    """"2–4, 7" for (2, 3, 4, 7)."""
    out: list[str] = []
    ps = sorted(set(int(p) for p in positions))
    i = 0
    while i < len(ps):
        j = i
        while j + 1 < len(ps) and ps[j + 1] == ps[j] + 1:
            j += 1
        out.append(str(ps[i]) if i == j else f"{ps[i]}–{ps[j]}")
        i = j + 1
    return ", ".join(out)
