"""Short human-readable lines about a run, shared by the exports and `opt-desktop-cli show`.

Runs are numbered from 1 for people (`Run 1` is `session.runs[0]`).
"""

from __future__ import annotations

from ..engine.events import Finished, ModelInfo
from ..engine.interventions_spec import format_head_mask
from ..engine.settings import GenerationSettings
from .trace import RunTrace


def counted(n: int, word: str, plural: str | None = None) -> str:
    """'1 token', '2 tokens', '0 tokens' (`plural` for words that do not just take an s)."""
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def run_name(index: int, trace: RunTrace) -> str:
    return f"Run {index + 1}" + (f" ({trace.label})" if trace.label else "")


def model_line(info: ModelInfo) -> str:
    where = f"{info.dtype} on {info.device}"
    revision = f", revision {info.revision[:12]}" if info.revision else ""
    name = info.source if info.label == info.source else f"{info.label} [{info.source}]"
    return f"{name} ({where}{revision})"


def changed_settings(trace: RunTrace) -> dict[str, object]:
    """Generation settings that differ from the defaults; the seed is left out (it is shown on its own)."""
    defaults = GenerationSettings().model_dump()
    return {k: v for k, v in trace.started.settings.items()
            if k != "seed" and (k not in defaults or _plain(defaults[k]) != _plain(v))}


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def settings_text(values: dict[str, object]) -> str:
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={_plain(v)}" for k, v in values.items()) or "defaults"


def head_mask_text(mask, info: ModelInfo | None = None) -> str:
    """The head mask as the app shows it ('3:0, 3:5 ×0.5, 7:*'; a bare head is ablated)."""
    return format_head_mask(mask, info.n_layers if info else None, info.n_heads if info else None)


def finish_text(finished: Finished | None) -> str:
    if finished is None:
        return "not finished (saved while running)"
    rate = f"{finished.tokens_per_s:.1f} tokens/s" if finished.tokens_per_s else "– tokens/s"
    ttft = (f"{finished.time_to_first_token_s * 1000:.0f} ms" if finished.time_to_first_token_s is not None
            else "–")
    return f"{counted(finished.n_tokens, 'token')}, {rate}, first token after {ttft}, finished: {finished.reason}"


def fork_text(trace: RunTrace) -> str | None:
    if trace.parent is None:
        return None
    at = f" at position {trace.fork_position}" if trace.fork_position is not None else ""
    return f"fork of run {trace.parent + 1}{at}"


def shorten(text: str, limit: int = 60) -> str:
    """One line at most `limit` characters long, newlines shown as ⏎."""
    flat = text.replace("\r\n", "\n").replace("\n", "⏎")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
