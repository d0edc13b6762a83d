"""A session (or one run of it) as Markdown, CSV, JSON or one self-contained HTML report.

`run` is an index into `session.runs` (0-based); None exports every run. Token text is escaped in
every format: in HTML a token reading `<script>` is text, never markup.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from ..formatting import FULL_SHADE_BITS, surprise_opacity
from .describe import (
    analyses_lines,
    changed_settings,
    counted,
    finish_text,
    fork_text,
    head_mask_text,
    lens_position,
    lens_rows,
    model_line,
    run_name,
    settings_text,
)
from .file import SessionFileError, session_document
from .head_roles import MARGIN, ROLE_DEFINITIONS, ROLE_NAMES, ROLES, THRESHOLD, marks_text, role_scores
from .routes_svg import routes_section
from .session import Session
from .trace import RunTrace

EXPORT_FORMATS = ("md", "csv", "json", "html")

_SHADE_RGB = (255, 140, 0)


class ExportError(SessionFileError):
    """An export cannot be made or written; str() is one line naming the file and the problem."""


def _runs(session: Session, run: int | None) -> list[int]:
    n = len(session.runs)
    if run is None:
        return list(range(n))
    if not 0 <= run < n:
        raise ExportError(f"There is no run {run + 1} to export: the session has {counted(n, 'run')}.")
    return [run]


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


# --- Markdown ----------------------------------------------------------------------------------


def _fence(text: str) -> str:
    longest = max((len(run) for run in text.split("\n") for run in _backtick_runs(run)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}text\n{text}\n{ticks}"


def _backtick_runs(line: str):
    run = 0
    for ch in line + " ":
        if ch == "`":
            run += 1
        else:
            if run:
                yield "`" * run
            run = 0


def _md_escape(text: str) -> str:
    # Inline markup only: every line this module writes starts with its own markup, never with the text.
    return "".join("\\" + ch if ch in "\\`*_[]<>|" else ch for ch in text)


def export_markdown(session: Session, run: int | None = None) -> str:
    out = ["# OPT Desktop session", ""]
    for i in _runs(session, run):
        t = session.runs[i]
        s = t.started
        out += [f"## {_md_escape(run_name(i, t))}", ""]
        out.append(f"- **Model:** {_md_escape(model_line(s.model))}")
        out.append(f"- **Seed:** {s.seed}")
        out.append(f"- **Settings changed from the defaults:** {_md_escape(settings_text(changed_settings(t)))}")
        if s.head_mask:
            out.append(f"- **Head mask:** {head_mask_text(s.head_mask, s.model)}")
        for change in t.mask_changes:
            out.append(f"- **Head mask from token {change.index}:** "
                       f"{head_mask_text(change.head_mask, s.model) or 'none'}")
        if s.hidden_positions:
            out.append(f"- **Hidden positions:** {', '.join(map(str, s.hidden_positions))}")
        if (fork := fork_text(t)) is not None:
            out.append(f"- **Fork:** {fork}")
        out.append(f"- **Result:** {finish_text(t.finished)}")
        for notice in t.notices:
            out.append(f"- **Note:** {_md_escape(notice)}")
        out += ["", "### Settings", "", "| setting | value |", "| --- | --- |"]
        for key, value in {**s.settings, "seed": s.seed}.items():
            out.append(f"| {key} | {_md_escape(json.dumps(value, ensure_ascii=False))} |")
        out += ["", f"### Prompt ({counted(t.n_prompt, 'token')})", "", _fence(s.prompt), "",
                f"### Output ({counted(t.n_generated, 'token')})", "", _fence(t.text), ""]
        out += _markdown_analyses(t)
    return "\n".join(out)


def _markdown_analyses(t: RunTrace) -> list[str]:
    lines = analyses_lines(t)
    if not lines:
        return []
    out = ["### Analyses", ""] + [f"- **{_md_escape(key)}:** {_md_escape(value)}" for key, value in lines]
    pos = lens_position(t)
    rows = lens_rows(t, pos)
    if rows:
        nxt = t.next_token(pos)
        what = f"predicting {_md_escape(repr(t.pieces[pos + 1]))}" if nxt is not None else "(no next token)"
        out += ["", f"Logit lens at position {pos}, {what}:", "", "| row | most likely next tokens | p(next) | rank |",
                "| --- | --- | --- | --- |"]
        for label, tops, p, rank in rows:
            shown = ", ".join(f"{_md_escape(repr(text))} {prob:.3g}" for text, prob in tops)
            out.append(f"| {label} | {shown} | {'' if p is None else f'{p:.3g}'} | {rank or ''} |")
    return out + [""]


# --- CSV ---------------------------------------------------------------------------------------

# A spreadsheet runs a cell that begins with one of these as a formula (OWASP, "CSV Injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_GUARD = "'"


def csv_text_cell(text: str) -> str:
    """Token text made safe for a spreadsheet: a cell that would begin a formula gets a leading
    apostrophe, as OWASP recommends. A cell that already begins with one gets another, so the
    export reads back exactly: `read_csv_text_cell` removes one leading apostrophe, if any."""
    return _GUARD + text if text.startswith(_FORMULA_STARTS + (_GUARD,)) else text


def read_csv_text_cell(cell: str) -> str:
    """The token text of a `text` / `top<j>_text` cell of a CSV export (the inverse of csv_text_cell)."""
    return cell[1:] if cell.startswith(_GUARD) else cell


def export_csv(session: Session, run: int | None = None) -> str:
    """One row per position (prompt included): run number, position, token, its probability and
    the top alternatives of the distribution it was drawn from. Empty cells where there is no value.

    Token text cells (`text`, `top<j>_text`) are neutralised against formula injection with
    csv_text_cell; read them back with read_csv_text_cell (docs/session-format.md, "Exports")."""
    chosen = _runs(session, run)
    k = max((session.runs[i].top_ids.shape[1] for i in chosen), default=0)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["run", "position", "part", "token_id", "text", "prob", "logprob", "rank", "entropy"]
    for j in range(1, k + 1):
        header += [f"top{j}_id", f"top{j}_text", f"top{j}_prob"]
    writer.writerow(header)
    for i in chosen:
        t = session.runs[i]
        known = t.known_pieces()
        for pos in range(t.length):
            logprob = _num(t.logprob[pos])
            row = [i + 1, pos, "prompt" if pos < t.n_prompt else "output", t.token_ids[pos], csv_text_cell(t.pieces[pos]),
                   "" if logprob is None else repr(math.exp(logprob)), "" if logprob is None else repr(logprob),
                   "" if logprob is None else int(t.rank[pos]),
                   "" if (e := _num(t.entropy[pos])) is None else repr(e)]
            for tid, p in zip(t.top_ids[pos].tolist(), t.top_probs[pos].tolist()):
                row += ["", "", ""] if math.isnan(p) else [tid, csv_text_cell(known.get(tid, "")), repr(p)]
            row += [""] * (len(header) - len(row))
            writer.writerow(row)
    return buffer.getvalue()


# --- JSON --------------------------------------------------------------------------------------


def export_json(session: Session, run: int | None = None) -> str:
    """session.json of the chosen runs (docs/session-format.md); `parent` keeps the session's numbering.

    Each analysis also carries its arrays' values as `data` (nested lists, NaN as null), so the
    export holds the lens and head importance without the arrays member."""
    chosen = _runs(session, run)
    doc = session_document(session, chosen)
    for run_doc, i in zip(doc["runs"], chosen):
        for entry, analysis in zip(run_doc["analyses"], session.runs[i].analyses):
            entry["data"] = {name: _plain_values(a) for name, a in analysis.arrays.items()}
    return json.dumps(doc, ensure_ascii=False, allow_nan=False, indent=1)


def _plain_values(a: np.ndarray):
    if a.dtype.kind == "f":
        with np.errstate(invalid="ignore"):  # non-finite values become null below; the cast need not warn
            return np.where(np.isfinite(a), a.astype(np.float64), None).tolist()
    return a.tolist()


# --- HTML --------------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table.meta { border-collapse: collapse; } table.meta td, table.meta th { padding: 2px 10px; text-align: left;
  vertical-align: top; border-bottom: 1px solid #eee; }
.text { white-space: pre-wrap; font-family: ui-monospace, monospace; padding: 0.8em; border: 1px solid #ddd;
  border-radius: 4px; }
.text .prompt { color: #777; }
figure { margin: 1em 0; } figure img { image-rendering: pixelated; display: block; border: 1px solid #ddd; }
figcaption, .legend { color: #555; font-size: 90%; }
.legend img { vertical-align: middle; margin: 0 0.4em; }
.routes { overflow-x: auto; }
"""


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _shade(logprob: float) -> str:
    if not math.isfinite(logprob):
        return ""
    r, g, b = _SHADE_RGB
    return f' style="background: rgba({r},{g},{b},{surprise_opacity(logprob):.3f})"'


def _token_title(t: RunTrace, pos: int) -> str:
    logprob = float(t.logprob[pos])
    head = f"position {pos} · token {t.token_ids[pos]} {t.pieces[pos]!r}"
    if math.isnan(logprob):
        return head + " · not scored (first position)"
    return (f"{head} · p = {math.exp(logprob):.4f} · logprob {logprob:.3f} · rank {int(t.rank[pos])} · "
            f"entropy {float(t.entropy[pos]):.3f} nats")


def _text_html(t: RunTrace) -> str:
    spans = []
    for pos in range(1, t.length):  # position 0 is the leading </s>
        if pos < t.n_prompt:
            text, cls = t.pieces[pos], "prompt"
        else:
            text, cls = t.text_parts[pos - t.n_prompt], "tok"
        spans.append(f'<span class="{cls}" title="{html.escape(_token_title(t, pos))}"'
                     f'{_shade(float(t.logprob[pos]))}>{html.escape(text)}</span>')
    return "".join(spans)


def _figure(data: np.ndarray, caption: str, cell=(8, 8), vmin=None, vmax=None) -> str:
    from .images import heatmap_png, value_range

    lo, hi = value_range(data)
    lo = lo if vmin is None else vmin
    hi = hi if vmax is None else vmax
    uri = _png_uri(heatmap_png(data, cell=cell, vmin=vmin, vmax=vmax))
    return (f'<figure><img src="{uri}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}. Colour: {lo:.4g} (dark) to {hi:.4g} (yellow); "
            "grey: no value.</figcaption></figure>")


def _meta_rows(rows: list[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)


def _run_html(i: int, t: RunTrace) -> str:
    s = t.started
    info = s.model
    rows = [("model", model_line(info)),
            ("architecture", f"{info.n_layers} layers, {info.n_heads} heads, hidden {info.hidden_size}, "
                             f"{'pre' if info.pre_layer_norm else 'post'}-LayerNorm, {info.n_params:,} parameters"),
            ("seed", str(s.seed)), ("result", finish_text(t.finished))]
    rows += [(k, json.dumps(v, ensure_ascii=False)) for k, v in s.settings.items() if k != "seed"]
    rows += [("inspect", settings_text(s.inspect))]
    if s.head_mask:
        rows.append(("head mask", head_mask_text(s.head_mask, info)))
    rows += [(f"head mask from token {c.index}", head_mask_text(c.head_mask, info) or "none")
             for c in t.mask_changes]
    if s.hidden_positions:
        rows.append(("hidden positions", ", ".join(map(str, s.hidden_positions))))
    if (fork := fork_text(t)) is not None:
        rows.append(("fork", fork))
    rows += [("note", n) for n in t.notices]

    parts = [f"<section class=\"run\"><h2>{html.escape(run_name(i, t))}</h2>",
             f"<table class=\"meta\">{_meta_rows(rows)}</table>",
             "<h3>Text</h3>",
             "<p class=\"legend\">Prompt in grey. Shaded by surprise: the darker the background, the less likely "
             f"the model found the token (full shade at {FULL_SHADE_BITS:g} bits). Hover a token for its probability.</p>",
             f"<div class=\"text\">{_text_html(t)}</div>"]
    T = t.length
    wide = max(1, min(24, 960 // max(T, 1)))  # position maps about 960 px wide, cells at most 24 px
    scores = np.vstack([np.exp(t.logprob.astype(np.float64)), t.entropy])
    parts.append("<h3>Probability and entropy per position</h3>")
    parts.append(_figure(scores[:1], f"Probability of each token (positions 0 to {T - 1})", cell=(wide, 20),
                         vmin=0.0, vmax=1.0))
    parts.append(_figure(scores[1:], f"Entropy of each predicting distribution, nats (positions 0 to {T - 1})",
                         cell=(wide, 20)))
    norm = t.hidden("norm")
    if np.isfinite(norm).any():
        parts.append("<h3>Hidden states</h3>")
        parts.append(_figure(norm, f"Residual-stream norm: rows embed, then the output of layers 0 to "
                                   f"{t.n_layers - 1}; columns positions 0 to {T - 1}", cell=(wide, 16)))
    if np.isfinite(t.attention("entropy")).any():
        parts += _html_attention(t)
    parts += _html_analyses(t)
    parts.append("</section>")
    return "\n".join(parts)


def _html_attention(t: RunTrace) -> list[str]:
    grid = f"rows layers 0 to {t.n_layers - 1}, columns heads 0 to {t.n_heads - 1}"
    parts = ["<h3>Attention</h3>"]
    for name, what in (("entropy", "Attention entropy averaged over positions, nats"),
                       ("distance", "Mean distance attended, averaged over positions, tokens")):
        values = t.attention(name)
        count = np.isfinite(values).sum(2)  # a head with no fed position at all stays NaN (grey)
        mean = np.where(count > 0, np.nansum(values, 2) / np.maximum(count, 1), np.nan)
        parts.append(_figure(mean, f"{what}: {grid}", cell=(24, 24)))
    scores = role_scores(t)
    for role in ROLES:
        values = None if scores is None else scores.scores[role]
        if values is None:
            why = "none (no attention statistics)" if scores is None else scores.why_not.get(role, "none")
            parts.append(f"<p class=\"legend\">{ROLE_NAMES[role].capitalize()} score: {html.escape(why)}.</p>")
        else:
            caption = f"{ROLE_NAMES[role].capitalize()} score, {ROLE_DEFINITIONS[role]}: {grid}"
            parts.append(_figure(values, caption, cell=(24, 24), vmin=0.0, vmax=1.0))
    if scores is not None:
        parts.append(f"<p class=\"legend\">Heads marked (score ≥ {THRESHOLD} and ≥ {MARGIN} above what even "
                     f"attention would score): {html.escape(marks_text(scores))}.</p>")
    return parts


def _html_analyses(t: RunTrace) -> list[str]:
    parts = []
    pos = lens_position(t)
    rows = lens_rows(t, pos)
    if rows:
        nxt = t.next_token(pos)
        what = (f"predicting the last generated token {html.escape(repr(t.pieces[pos + 1]))}" if nxt is not None
                else "(no next token)")
        head = "".join(f"<th>top {j + 1}</th>" for j in range(len(rows[0][1])))
        body = []
        for label, tops, p, rank in rows:
            cells = "".join(f"<td><code>{html.escape(repr(text))}</code> {prob:.3g}</td>" for text, prob in tops)
            body.append(f"<tr><th>{label}</th>{cells}<td>{'' if p is None else f'{p:.3g}'}</td>"
                        f"<td>{rank or ''}</td></tr>")
        parts += ["<h3>Logit lens</h3>",
                  f"<p class=\"legend\">Position {pos}, {what}: each hidden-state row (embed, then the output of "
                  "each layer) read through the model's final norm and output head. The last row is the model's own "
                  "prediction.</p>",
                  f"<table class=\"meta lens\"><tr><th>row</th>{head}<th>p(next)</th><th>rank</th></tr>"
                  + "".join(body) + "</table>"]
    for result in t.head_importances():
        state = "" if result.completed else " (stopped early: grey heads were not computed)"
        parts += [f"<h3>Head importance, heads scaled ×{result.scale:g}{state}</h3>",
                  _figure(result.delta, f"Change in the log-probability of the generated text when each head is "
                                        f"scaled by {result.scale:g}: rows layers 0 to {t.n_layers - 1}, columns "
                                        f"heads 0 to {t.n_heads - 1} (most negative: the head mattered most)",
                          cell=(24, 24))]
    for pos, result in t.attributions():
        how = "input × gradient" if result.method == "ixg" else f"integrated gradients, {result.steps} steps"
        versus = ("log-probability" if result.alternative_id is None
                  else f"logit minus that of {html.escape(repr(t.known_pieces().get(result.alternative_id, '?')))}")
        order = np.argsort(-np.abs(result.scores))[:12]
        body = "".join(f"<tr><td>{i}</td><td><code>{html.escape(repr(t.pieces[i]))}</code></td>"
                       f"<td>{float(result.scores[i]):+.4g}</td></tr>" for i in order)
        note = f" {html.escape(result.note)}" if result.note else ""
        parts += [f"<h3>Why {html.escape(repr(t.pieces[pos]))} at position {pos}? ({how} of its {versus})</h3>",
                  f"<p class='legend'>The input tokens that mattered most, by the size of their score (positive: "
                  f"towards this token).{note}</p>",
                  "<table class='meta'><tr><th>position</th><th>token</th><th>score</th></tr>" + body + "</table>"]
    for result in t.patchings():
        target = html.escape(repr(t.known_pieces().get(result.target_id, f"#{result.target_id}")))
        maps = [result.shown(result.prob)] + ([result.shown(result.head_prob)] if result.head_prob.size else [])
        if result.normalisable:
            legend = "each cell is how much of the difference patching it recovers (0 corrupted, 1 clean)."
            levels = (0.0, 1.0)
        else:  # centred on no change
            reach = max((float(np.nanmax(np.abs(m))) for m in maps if np.isfinite(m).any()), default=0.0) or 1.0
            legend = html.escape(result.too_close)
            levels = (-reach, reach)
        parts += [f"<h3>Activation patching for {target}</h3>",
                  f"<p class='legend'>This run's prompt patched into a corrupted prompt of the same length: the "
                  f"target's probability is {result.clean_prob:.4g} clean and {result.corrupt_prob:.4g} corrupted; "
                  f"{legend}</p>",
                  _figure(maps[0], f"Rows embed, then the output of layers 0 to {t.n_layers - 1}; columns prompt "
                                   f"positions 0 to {t.n_prompt - 1}", cell=(24, 16), vmin=levels[0], vmax=levels[1])]
        if result.head_prob.size:
            parts.append(_figure(maps[1], f"Each head's output patched at all positions: rows layers 0 to "
                                          f"{t.n_layers - 1}, columns heads", cell=(24, 24), vmin=levels[0],
                                 vmax=levels[1]))
    return parts + routes_section(t)


def export_html(session: Session, run: int | None = None) -> str:
    """One file with everything inline (styles, PNG heatmaps as data: URIs) and no scripts."""
    from .images import colorbar_png

    try:
        runs = "\n".join(_run_html(i, session.runs[i]) for i in _runs(session, run))
        bar = _png_uri(colorbar_png())
    except ImportError:
        raise ExportError("The HTML report needs Pillow to draw its images: pip install pillow") from None
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        # Nothing in the report may run or load: images are inline, styles are inline.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>OPT Desktop session</title><style>{_CSS}</style></head><body>\n"
        "<h1>OPT Desktop session</h1>\n"
        f"<p class=\"legend\">Heatmap colour scale: low<img src=\"{bar}\" alt=\"colour scale\">high</p>\n"
        f"{runs}\n</body></html>\n"
    )


# --- files -------------------------------------------------------------------------------------

_EXPORTERS = {"md": export_markdown, "csv": export_csv, "json": export_json, "html": export_html}


def export_text(session: Session, fmt: str, run: int | None = None) -> str:
    if fmt not in _EXPORTERS:
        raise ExportError(f"Unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}.")
    return _EXPORTERS[fmt](session, run)


def write_export(session: Session, fmt: str, path: str | Path, run: int | None = None) -> None:
    """Write an export to `path` atomically (the previous file survives a failure)."""
    path = Path(path)
    text = export_text(session, fmt, run)
    # CSV opens in spreadsheets as UTF-8 only with a byte-order mark.
    data = text.encode("utf-8-sig" if fmt == "csv" else "utf-8")
    try:
        write_atomic(path, lambda f: f.write(data))
    except OSError as exc:
        raise ExportError(f"Could not write {path}: {exc.strerror or exc}") from None
