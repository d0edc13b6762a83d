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


def row_label(row: int) -> str:
    """Hidden-state row `row` as the app labels it: 'embed', then the layer whose output it is (0 …)."""
    return "embed" if row == 0 else str(row - 1)


def lens_rows(trace: RunTrace, position: int, k: int = 3) -> list[tuple[str, list[tuple[str, float]], float | None, int]]:
    """The stored lens at `position` row by row: (row label, [(token text, probability)] * k,
    probability of the token that came next or None, its rank or 0); [] without a stored lens."""
    import math

    result = trace.lens_at(position)
    ranks = trace.lens_ranks(position)
    if result is None or ranks is None:
        return []
    out = []
    for row in range(result.top_ids.shape[0]):
        tops = [(result.top_pieces[row][j], float(result.top_probs[row, j])) for j in range(min(k, result.top_ids.shape[1]))]
        lp = float(result.target_logprob[row])
        out.append((row_label(row), tops, None if math.isnan(lp) else math.exp(lp), int(ranks[row])))
    return out


def lens_position(trace: RunTrace) -> int:
    """The position whose lens a short summary shows: the one that predicted the last generated token."""
    return max(0, trace.length - 2) if trace.n_generated else trace.length - 1


def analyses_lines(trace: RunTrace) -> list[tuple[str, str]]:
    """(key, value) lines about the analyses kept with a run, for `show` and the Markdown export."""
    from .analyses import HEAD_IMPORTANCE, LENS

    lines: list[tuple[str, str]] = []
    table = trace.lens_table()
    if table is not None:
        pos = lens_position(trace)
        target = trace.next_token(pos)
        where = f"position {pos}"
        if target is not None:
            rank = int(table.target_rank[-1, pos])
            where += (f": the last generated token {trace.pieces[pos + 1]!r} is rank {rank} in the last row and "
                      f"first reaches rank 1 at row {_first_top(table.target_rank[:, pos])}")
        lines.append(("logit lens", f"every position, top {table.top_k} per row ({where})"))
    for result in trace.head_importances():
        state = "complete" if result.completed else "stopped early"
        lines.append((f"head importance ×{result.scale:g}", f"{state}; {_top_heads(result.delta)}"))
    for analysis in trace.analyses:
        if analysis.kind not in (LENS, HEAD_IMPORTANCE):
            arrays = ", ".join(f"{name} {tuple(a.shape)}" for name, a in analysis.arrays.items())
            lines.append((f"analysis {analysis.kind}", arrays or "no arrays"))
    return lines


def _first_top(ranks) -> str:
    for row, rank in enumerate(ranks.tolist()):
        if rank == 1:
            return row_label(row)
    return "none"


def _top_heads(delta, n: int = 3) -> str:
    import numpy as np

    flat = np.where(np.isnan(delta), np.inf, delta).ravel()
    order = np.argsort(flat)[:n]
    H = delta.shape[1]
    heads = [f"{i // H}:{i % H} ({flat[i]:+.3g})" for i in order if np.isfinite(flat[i])]
    return "largest drops in log-probability: " + ", ".join(heads) if heads else "no head computed"
