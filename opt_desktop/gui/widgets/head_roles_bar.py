"""The heads a run names as previous-token, induction and sink heads (session/head_roles.py): a line
above the attention grid listing them (a click on one selects it) with the legend and the thresholds,
and the letters that mark them on the layers × heads grid.
"""

from __future__ import annotations

import html

import numpy as np
from PySide6.QtCore import QPoint, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QTextDocument
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from ...session.head_roles import (
    MARGIN, MOST_PER_ROLE, ROLE_DEFINITIONS, ROLE_LETTERS, ROLE_NAMES, ROLES, THRESHOLD, MarkedHead, RoleScores,
    candidates,
)
from .head_mask_editor import GridOverlay

LEGEND = (f"{', '.join(ROLE_LETTERS[r] for r in ROLES)} on the grid: score ≥ {THRESHOLD:g} and ≥ {MARGIN:g} above "
          f"chance, at most {MOST_PER_ROLE} per role. Hover for the definitions.")
DEFINITIONS = (
    "<p>Scores of each head over this run so far (queries t ≥ 1: every token but the last, which is never "
    "fed to the model; A[t, s] is the head's weight from query t on key s, x<sub>t</sub> the token at t):</p><ul>"
    + "".join(f"<li><b>{ROLE_LETTERS[r]} {ROLE_NAMES[r]}</b>: {html.escape(ROLE_DEFINITIONS[r])}</li>" for r in ROLES)
    + f"</ul><p>A head is marked when its score is at least {THRESHOLD:g} and at least {MARGIN:g} above chance: "
    "for previous-token and sink the weight of one key under even attention, 1/(t+1); for induction the weight "
    "the head does not put on key 0 spread evenly over keys 1..t, so that text in which most tokens repeat "
    f"marks nothing. At most {MOST_PER_ROLE} heads per role, the strongest. Layers and heads count from 0.</p>"
    "<p>Click a head to select it: the grid shows that role's score of every head, and with full "
    "attention rows kept, the matrix shows the head (an induction head's stripe runs one key right of the "
    "diagonal where the text repeats). See docs/attention-heads.md.</p>")


class HeadRolesBar(QWidget):
    """'Heads on this run: P previous-token L0H0 (0.98) · I induction …', each head a link."""

    head_clicked = Signal(str, int, int)  # (role, layer, head)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.list_label = QLabel()
        self.list_label.setTextFormat(Qt.TextFormat.RichText)  # our own text only: no token text is shown
        self.list_label.setWordWrap(True)
        self.list_label.setToolTip(DEFINITIONS)
        self.list_label.linkActivated.connect(self._on_link)
        self.legend = QLabel(LEGEND)
        self.legend.setTextFormat(Qt.TextFormat.PlainText)
        self.legend.setWordWrap(True)
        self.legend.setToolTip(DEFINITIONS)
        self.legend.setEnabled(False)  # drawn in the muted text colour: a note, not content
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.list_label)
        layout.addWidget(self.legend)

    def show_scores(self, scores: RoleScores | None, captured: bool = True) -> None:
        """`scores` of the run shown; None with `captured` False: the run kept no attention statistics."""
        if scores is None:
            self.list_label.setText("<b>Heads on this run:</b> " + (
                "none yet." if captured else "this run kept no attention statistics, so no head can be named."))
            return
        parts = []
        for role in ROLES:
            name = f"{ROLE_LETTERS[role]} {ROLE_NAMES[role]}"
            if scores.scores[role] is None:
                parts.append(f"{name}: <i>{html.escape(scores.why_not.get(role, 'not scored'))}</i>")
                continue
            heads = candidates(scores, role)
            links = ", ".join(f"{_link(m)} ({m.score:.2f})" for m in heads[:MOST_PER_ROLE])
            if not heads:  # how close the best head came, itself a link: no hunting for it either
                best = scores.strongest(role)
                links = "none" if best is None else f"none (strongest {_link(best)}, {best.score:.2f})"
            if len(heads) > MOST_PER_ROLE:
                links += f" and {len(heads) - MOST_PER_ROLE} more"
            parts.append(f"{name}: {links}")
        source = " (computed from the kept attention rows)" if scores.from_rows else ""
        self.list_label.setText(f"<b>Heads on this run{source}:</b> " + " · ".join(parts))

    def text(self) -> str:
        """What the list says, as plain text."""
        doc = QTextDocument()
        doc.setHtml(self.list_label.text())
        return doc.toPlainText()

    def _on_link(self, href: str) -> None:
        role, layer, head = href.split(":")
        self.head_clicked.emit(role, int(layer), int(head))


def score_grid(scores: RoleScores | None, role: str, shape: tuple[int, int]) -> tuple[np.ndarray, str]:
    """(L, H) scores of `role` over the run, for the layers × heads grid, and the caption saying so."""
    values = None if scores is None else scores.scores.get(role)
    name = ROLE_NAMES[role]
    if values is not None:
        queries = scores.n_copies if role == "induction" else scores.n_queries
        return values, (f"{name} score of each head over this run ({queries} queries; "
                        "P, I, S mark the heads it names)")
    why = "no attention statistics yet" if scores is None else scores.why_not.get(role, "not scored")
    return np.full(shape, np.nan, np.float32), f"{name.capitalize()} score: {why}."


def _link(m: MarkedHead) -> str:
    return f'<a href="{m.role}:{m.layer}:{m.head}">{m.label}</a>'


class HeadRoleMarks(GridOverlay):
    """The role letters (P, I, S) in the top-left corner of each marked head of a layers × heads heatmap,
    drawn in device pixels like HeadMaskOverlay, on a halo so they read on every colour."""

    def __init__(self):
        super().__init__()
        self._letters: dict[tuple[int, int], str] = {}
        self._text = QColor(Qt.GlobalColor.black)
        self._halo = QColor(Qt.GlobalColor.white)
        self.setZValue(6)  # over the mask hatching, under the heatmap's selection outline

    def set_marks(self, scores: RoleScores | None, shape: tuple[int, int]) -> None:
        letters: dict[tuple[int, int], str] = {}
        if scores is not None:
            for role, marks in scores.marked().items():
                for m in marks:
                    letters[(m.layer, m.head)] = letters.get((m.layer, m.head), "") + ROLE_LETTERS[role]
        self.prepareGeometryChange()
        self._shape = shape
        self._letters = {cell: text for cell, text in letters.items() if cell[0] < shape[0] and cell[1] < shape[1]}
        self.update()

    def letters(self) -> dict[tuple[int, int], str]:
        """{(layer, head): 'P', 'IS', …} marked now."""
        return dict(self._letters)

    def set_colors(self, text: QColor, halo: QColor) -> None:
        self._text, self._halo = QColor(text), QColor(halo)
        self.update()

    def paint(self, painter: QPainter, option, widget=None) -> None:
        if not self._letters:
            return
        to_device = painter.transform()
        painter.save()
        painter.resetTransform()
        font = QFont(painter.font())
        font.setBold(True)
        font.setPointSizeF(max(font.pointSizeF() * 0.85, 6.0))
        painter.setFont(font)
        metrics = QFontMetrics(font)
        for (row, col), text in self._letters.items():
            cell = to_device.mapRect(QRectF(col - 0.5, row - 0.5, 1.0, 1.0))
            box = metrics.boundingRect(text).adjusted(-2, 0, 2, 0)
            if box.width() > cell.width() - 2 or box.height() > cell.height() - 2:
                # Too small a cell for a letter: a square in its corner still shows the mark.
                side = max(3.0, min(cell.width(), cell.height()) / 2.5)
                painter.fillRect(QRectF(cell.left(), cell.top(), side, side), self._text)
                continue
            box.moveTopLeft(cell.topLeft().toPoint() + QPoint(2, 2))
            painter.fillRect(box, self._halo)
            painter.setPen(self._text)
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()
