"""What hovering a token of the Output view shows: its text and id, probability, rank, entropy, the
character it completes, whether it is hidden from attention, and the alternatives the model weighed;
and the box it shows for (the character under the mouse).

Token text is untrusted: every piece is escaped, with whitespace and control characters made visible.
"""

from __future__ import annotations

import html
import math
from typing import Callable

import numpy as np
from PySide6.QtCore import QPoint, QPointF, QRect, Qt
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QTextEdit

from ...session.trace import RunTrace
from .token_table import format_percent as _pct


def visible(text: str) -> str:
    """Token text for a tooltip: quoted, whitespace kept, control characters made visible."""
    shown = text.replace("\n", "↵").replace("\r", "␍").replace("\t", "⇥")
    return f"<span style='white-space:pre'>“{html.escape(shown)}”</span>"


def token_tooltip(t: RunTrace, pos: int, piece: Callable[[int], str], group_start: int | None = None,
                  hidden_next: bool = False) -> str:
    """The tooltip of token `pos`. `group_start`: the first token of the character `pos` completes
    (byte-level BPE split it); `hidden_next`: it will be hidden from attention in the next run."""
    if not 0 <= pos < t.length:
        return ""
    tid = t.token_ids[pos]
    where = "prompt" if pos < t.n_prompt else "generated"
    rows = [f"<b>{visible(t.pieces[pos])}</b>&nbsp;&nbsp;id {tid} · position {pos} ({where})"]
    lp = float(t.logprob[pos])
    if not math.isfinite(lp):
        rows.append("Start of the sequence: no probability." if pos == 0 else "Not scored yet.")
    else:
        rows.append(f"probability <b>{_pct(math.exp(lp))}</b> · rank {int(t.rank[pos])} · "
                    f"entropy {float(t.entropy[pos]):.2f} nats")
    if group_start is not None:
        joint = float(np.sum(t.logprob[group_start: pos + 1]))
        before = ", ".join(f"{p} ({html.escape(t.pieces[p])})" for p in range(group_start, pos))
        rows.append(f"Its character began in token{'s' if pos - group_start > 1 else ''} {before}; "
                    f"together: probability {_pct(math.exp(joint))}")
    if pos in t.started.hidden_positions:
        rows.append("Hidden from attention in this run: later tokens could not look at it.")
    if hidden_next:
        rows.append("Will be hidden from attention in the next run.")
    alts = alternatives_html(t, pos, piece) if math.isfinite(lp) else ""  # nothing predicted position 0
    if alts:
        rows.append(alts)
        rows.append("<i>Right-click to fork the run here with one of these.</i>")
    return "<br>".join(rows)


def alternatives_html(t: RunTrace, pos: int, piece: Callable[[int], str]) -> str:
    """The top alternatives at `pos` with their probabilities and ids, the chosen one in bold."""
    chosen = t.token_ids[pos]
    rows = []
    for tid, p in zip(t.top_ids[pos], t.top_probs[pos]):
        if not math.isfinite(float(p)):
            continue
        cell = visible(piece(int(tid)))
        if int(tid) == chosen:
            cell = f"<b>{cell}</b>"
        rows.append(f"<tr><td>{cell}</td><td align='right'>&nbsp;&nbsp;{_pct(float(p))}</td>"
                    f"<td>&nbsp;&nbsp;#{int(tid)}</td></tr>")
    if not rows:
        return ""
    return "Top alternatives:<table cellspacing='0'>" + "".join(rows) + "</table>"


def character_rect(edit: QTextEdit, point: QPoint) -> QRect:
    """The box of the character under a viewport point, so a tooltip goes away when the mouse leaves it
    (empty where the character ends a line: there is no reliable right edge)."""
    scrolled = QPointF(point) + QPointF(edit.horizontalScrollBar().value(), edit.verticalScrollBar().value())
    index = edit.document().documentLayout().hitTest(scrolled, Qt.HitTestAccuracy.ExactHit)
    cursor = QTextCursor(edit.document())
    cursor.setPosition(index)
    left = edit.cursorRect(cursor)
    cursor.setPosition(min(index + 1, edit.document().characterCount() - 1))
    right = edit.cursorRect(cursor)
    if right.top() != left.top():
        return QRect()
    return QRect(QPoint(left.left(), left.top()), QPoint(max(right.left(), left.left() + 1), left.bottom()))
