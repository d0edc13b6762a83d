"""Human-readable descriptions of a run, the one place they are written: the exports, `opt-desktop-cli
show`, the window's runs panel and its compare view all describe runs with these. Plain text, no Qt:
whoever puts it in rich text, a tooltip or HTML escapes it.

Runs are numbered from 1 for people (`Run 1` is `session.runs[0]`); layers and heads from 0.
"""

from __future__ import annotations

from ..engine.messages.events import Finished, ModelInfo
from ..engine.messages.interventions_spec import format_head_mask
from ..engine.messages.rows import row_label
from ..engine.messages.settings import GenerationSettings
from ..formatting import position_ranges
from .trace import RunTrace

_REASONS = {"length": "max tokens", "eos": "end of text", "stop_string": "stop string", "cancelled": "stopped",
            "error": "failed"}


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
    ending = f"{finished.reason} ({finished.message})" if finished.reason == "error" and finished.message else finished.reason
    return f"{counted(finished.n_tokens, 'token')}, {rate}, first token after {ttft}, finished: {ending}"


def fork_text(trace: RunTrace) -> str | None:
    if trace.parent is None:
        return None
    at = f" at position {trace.fork_position}" if trace.fork_position is not None else ""
    return f"fork of run {trace.parent + 1}{at}"


def shorten(text: str, limit: int = 60) -> str:
    """One line at most `limit` characters long, newlines shown as ⏎."""
    flat = text.replace("\r\n", "\n").replace("\n", "⏎")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _start(text: str, limit: int) -> str:
    """The first words of `text` in at most `limit` characters, "…" where it was cut."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    space = flat.rfind(" ", 0, limit)  # the last word that ends within the limit
    cut = flat[:space] if space >= limit // 2 else flat[: limit - 1]
    return cut.rstrip(" ,.;:") + "…"


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(repr(x) for x in v) or "none"
    return "none" if v is None else str(v)


def mask_texts(trace: RunTrace) -> tuple[str, str | None]:
    """The head mask at the start ('3:0, 7:*' or 'none'), and its changes during the run (or None)."""
    s = trace.started
    L, H = trace.n_layers, trace.n_heads
    start = format_head_mask(s.head_mask, L, H) or "none"
    if not trace.mask_changes:
        return start, None
    return start, "; ".join(f"from position {trace.n_prompt + c.index}: {format_head_mask(c.head_mask, L, H) or 'none'}"
                            for c in trace.mask_changes)


def run_settings(trace: RunTrace) -> dict[str, str]:
    """What decided a run, one value per setting (to set two runs side by side): model, prompt, seed,
    decoding settings, interventions, and how it ended."""
    s = trace.started
    rows = {
        "model": s.model.label,
        "dtype": s.model.dtype,
        "prompt": repr(shorten(s.prompt)),
        "prompt tokens": str(trace.n_prompt),
        "seed": str(s.seed),
        "max new tokens": str(s.max_new_tokens),
    }
    rows.update({key: _value(value) for key, value in s.settings.items() if key not in ("seed", "max_new_tokens")})
    rows["head mask"], changes = mask_texts(trace)
    if changes is not None:
        rows["head mask changes"] = changes
    rows["hidden from attention"] = position_ranges(s.hidden_positions) or "none"
    if trace.finished is not None:
        rows["ended by"] = trace.finished.reason
    return rows


def run_title_lines(index: int, trace: RunTrace) -> tuple[str, str]:
    """A run's name in two short lines, for a narrow panel: where it came from and its prompt's start,
    then how it decoded (greedy or the sampling seed), its interventions and how far it got."""
    s = trace.started
    origin = [f"#{index + 1}"]
    if trace.label:
        origin.append(shorten(trace.label, 24))
    if trace.fork_position is not None:
        piece = trace.pieces[trace.fork_position] if trace.fork_position < trace.length else "?"
        origin.append(f"fork at {trace.fork_position} → {shorten(repr(piece), 12)}")
    elif trace.parent is not None:
        origin.append("continued")
    origin.append(f"“{_start(s.prompt, 18)}”" if s.prompt.strip() else "(token ids)")
    how = [f"seed {s.seed}" if s.settings.get("do_sample") else "greedy"]
    start, changes = mask_texts(trace)
    if start != "none" or changes is not None:
        how.append(f"mask {shorten(start, 14)}" + (" (changed)" if changes is not None else ""))
    if s.hidden_positions:
        how.append(f"hide {shorten(position_ranges(s.hidden_positions), 10)}")
    done = trace.finished
    tokens = counted(trace.n_generated, "token")
    if done is None:
        how.append(tokens + " …")
    elif done.reason in ("cancelled", "error"):
        how.append(f"{tokens}, {_REASONS[done.reason]}")
    else:
        how.append(tokens)
    return " · ".join(origin), " · ".join(how)


def run_title(index: int, trace: RunTrace) -> str:
    """One line that tells a run from its siblings: number, where it came from, the prompt's start,
    greedy or the sampling seed, the interventions, and how far it got.

    "#3 · fork at 7 → ' cat' · “Once upon a…” · seed 42 · mask 3:0 · 24 tokens". `run_details` has the rest.
    """
    return " · ".join(run_title_lines(index, trace))


def decoding_text(settings: dict) -> str:
    """"greedy", or "sampling, temperature 0.7, top-k 50, top-p 0.9": the sampling filters in use."""
    if not settings.get("do_sample"):
        return "greedy"
    parts = [f"sampling, temperature {settings.get('temperature', 1.0):g}"]
    if settings.get("top_k"):
        parts.append(f"top-k {settings['top_k']}")
    for name, label in (("top_p", "top-p"), ("typical_p", "typical-p")):
        if settings.get(name, 1.0) != 1.0:
            parts.append(f"{label} {settings[name]:g}")
    if settings.get("min_p"):
        parts.append(f"min-p {settings['min_p']:g}")
    return ", ".join(parts)


def run_summary(trace: RunTrace) -> dict[str, str]:
    """What a run was made with and how it ended, one line each: model, decoding, max new tokens,
    repetition, stop strings, seed, head mask, hidden tokens, origin and result."""
    s = trace.started
    settings = dict(s.settings)
    mask, changes = mask_texts(trace)
    return {
        "model": model_line(s.model),
        "decoding": decoding_text(settings),
        "max new tokens": str(s.max_new_tokens),
        "repetition": (f"penalty {settings.get('repetition_penalty', 1.0):g}, no-repeat n-gram "
                       f"{settings.get('no_repeat_ngram_size', 0)}"),
        "stop strings": ", ".join(repr(x) for x in settings.get("stop_strings") or ()) or "none",
        "seed": str(s.seed),
        "head mask": mask + (f"; {changes}" if changes else ""),
        "hidden tokens": position_ranges(s.hidden_positions) or "none",
        "origin": fork_text(trace) or trace.label or "a new run",
        "result": finish_text(trace.finished) if trace.finished is not None else "generating…",
    }


def run_details(index: int, trace: RunTrace) -> list[tuple[str, str]]:
    """The run's name and whole prompt, then `run_summary`: for a tooltip or a listing."""
    s = trace.started
    rows = [("run", run_name(index, trace)),
            ("prompt", repr(shorten(s.prompt, 200)) if s.prompt else "(token ids only)")]
    return rows + list(run_summary(trace).items())


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
