"""Two runs side by side: their texts with the first differing token marked, each position's
probability and entropy in both runs, the divergence the engine computes on request, and the two
runs' settings with the differing ones highlighted.

The window picks the runs (`set_choices`, `runs_chosen`, `set_runs`) and computes the divergence
(`divergence_requested`, `set_divergence`); the view only compares what it is handed.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPalette, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QSplitter, QTableWidget,
    QTableWidgetItem, QTabWidget, QTextEdit, QVBoxLayout, QWidget,
)

from ...engine.messages.results import Divergence
from ...session.compare import RunComparison, compare_runs
from ...session.describe import run_settings
from ...session.trace import RunTrace
from ..colors import follow_palette, mix
from ..rich_text import plain_tip
from .divergence_panel import DivergencePanel
from .heatmap import style_plot
from .splitter import splitter
from .token_table import format_percent, quote_piece

_PROMPT_TEXT_MIX = 0.35  # prompt text blended this far toward the background, as in the output view
_MARK_MIX = 0.45  # the first differing token: background blended this far toward the run's colour


def run_colors(palette: QPalette) -> tuple[QColor, QColor]:
    """Run A in the palette's highlight colour, run B in an orange that reads on light and dark bases."""
    dark = palette.color(QPalette.ColorRole.Base).lightness() < 128
    return QColor(palette.color(QPalette.ColorRole.Highlight)), QColor("#ffa94d" if dark else "#d9480f")


def token_text(trace: RunTrace, pos: int) -> str:
    """What position `pos` adds to the shown text: a prompt piece, or a generated token's text."""
    return trace.pieces[pos] if pos < trace.n_prompt else trace.text_parts[pos - trace.n_prompt]


class CompareView(QWidget):
    runs_chosen = Signal(int, int)  # indices into the labels of set_choices: run A, run B
    divergence_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._a: RunTrace | None = None
        self._b: RunTrace | None = None
        self._labels = ("A", "B")
        self.comparison: RunComparison | None = None
        self._available: tuple[bool, str] = (True, "")
        self._diff_spans: dict[str, tuple[int, int] | None] = {"a": None, "b": None}

        # Which runs.
        self.combo_a, self.combo_b = QComboBox(), QComboBox()
        for combo in (self.combo_a, self.combo_b):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(24)
            combo.currentIndexChanged.connect(self._on_combo_changed)
        choose = QHBoxLayout()
        choose.addWidget(QLabel("Run A:"))
        choose.addWidget(self.combo_a, 1)
        choose.addSpacing(12)
        choose.addWidget(QLabel("Run B:"))
        choose.addWidget(self.combo_b, 1)
        self.summary = QLabel("Choose two runs to compare.")
        self.summary.setTextFormat(Qt.TextFormat.PlainText)
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # The two texts.
        self.title_a, self.title_b = QLabel("A"), QLabel("B")
        self.text_a, self.text_b = QTextEdit(), QTextEdit()
        texts = QSplitter(Qt.Orientation.Horizontal)
        for title, edit in ((self.title_a, self.text_a), (self.title_b, self.text_b)):
            edit.setReadOnly(True)
            edit.setUndoRedoEnabled(False)
            title.setTextFormat(Qt.TextFormat.PlainText)
            pane = QWidget()
            pl = QVBoxLayout(pane)
            pl.setContentsMargins(0, 0, 0, 0)
            pl.addWidget(title)
            pl.addWidget(edit, 1)
            texts.addWidget(pane)
        texts.setChildrenCollapsible(False)

        # Probability and entropy per position, both runs on one x axis.
        self.prob_plot, self.entropy_plot = pg.PlotWidget(), pg.PlotWidget()
        self.prob_plot.setLabel("left", "probability of its token")
        self.prob_plot.setYRange(0, 1, padding=0.02)
        self.entropy_plot.setLabel("left", "entropy (nats)")
        self.entropy_plot.setLabel("bottom", "position")
        self.entropy_plot.setXLink(self.prob_plot)
        self._legends = []
        for plot in (self.prob_plot, self.entropy_plot):
            plot.getPlotItem().setMenuEnabled(False)
            plot.showGrid(x=False, y=True, alpha=0.3)
            self._legends.append(plot.addLegend(offset=(-10, 10)))
        self.prob_a_curve = self.prob_plot.plot([], [], connect="finite", name="A")
        self.prob_b_curve = self.prob_plot.plot([], [], connect="finite", name="B")
        # B's probability of A's token where they part: how surprised B was that A went this way.
        self.b_of_a_point = pg.ScatterPlotItem(size=9, symbol="d", name="B's p of A's token")
        self.prob_plot.addItem(self.b_of_a_point)
        self.entropy_a_curve = self.entropy_plot.plot([], [], connect="finite", name="A")
        self.entropy_b_curve = self.entropy_plot.plot([], [], connect="finite", name="B")
        self.readout = QLabel("Hover a plot to read the values at a position.")
        self.readout.setTextFormat(Qt.TextFormat.PlainText)  # it quotes tokens
        self.readout.setMinimumWidth(10)
        curves_page = QWidget()
        cl = QVBoxLayout(curves_page)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.addWidget(self.prob_plot, 1)
        cl.addWidget(self.entropy_plot, 1)
        cl.addWidget(self.readout)

        # Divergence, computed by the engine on request.
        self.divergence_panel = DivergencePanel()
        self.divergence_panel.requested.connect(self.divergence_requested)
        self.divergence_button = self.divergence_panel.button
        self._legends.append(self.divergence_panel.legend)

        # Settings side by side.
        self.settings_table = QTableWidget(0, 2)
        self.settings_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.settings_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.settings_table.setWordWrap(False)
        self._differing: list[str] = []

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(curves_page, "Probability and entropy")
        self.tabs.addTab(self.divergence_panel, "Divergence")
        self.tabs.addTab(self.settings_table, "Settings")

        split = splitter(Qt.Orientation.Vertical, (texts, 2), (self.tabs, 3))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(choose)
        layout.addWidget(self.summary)
        layout.addWidget(split, 1)

        self._diff_lines = []
        for plot in (self.prob_plot, self.entropy_plot, self.divergence_panel.plot):
            line = pg.InfiniteLine(angle=90, movable=False)
            line.setVisible(False)
            plot.addItem(line, ignoreBounds=True)
            self._diff_lines.append(line)
        self.prob_plot.scene().sigMouseMoved.connect(lambda p: self._on_hover(self.prob_plot, p))
        self.entropy_plot.scene().sigMouseMoved.connect(lambda p: self._on_hover(self.entropy_plot, p))
        follow_palette(self, self._restyle)
        self._apply_palette()
        self._update_divergence_button()

    # --- choosing runs ---------------------------------------------------------------------------

    def set_choices(self, labels: list[str]) -> None:
        """The runs one can pick, in order. Keeps the current pair when it still exists; otherwise
        picks the last two runs (the newest against the one before). A new pair, or a pair whose runs
        are not shown yet, is announced with runs_chosen so the window hands the traces over."""
        before = self.chosen()
        n = len(labels)
        a, b = before
        if not (0 <= a < n and 0 <= b < n):
            a, b = max(n - 2, 0), n - 1
        for combo, index in ((self.combo_a, a), (self.combo_b, b)):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(labels)
            combo.setCurrentIndex(index if n else -1)
            combo.blockSignals(False)
        if n and (self.chosen() != before or self.comparison is None):
            self.runs_chosen.emit(*self.chosen())

    def chosen(self) -> tuple[int, int]:
        return self.combo_a.currentIndex(), self.combo_b.currentIndex()

    def _on_combo_changed(self, _index: int) -> None:
        a, b = self.chosen()
        if a >= 0 and b >= 0:
            self.runs_chosen.emit(a, b)

    # --- the runs ------------------------------------------------------------------------------

    def set_runs(self, a: RunTrace | None, b: RunTrace | None, label_a: str = "A", label_b: str = "B") -> None:
        """Compare run `a` (the baseline) with run `b`; None for either clears the view."""
        self._a, self._b, self._labels = a, b, (label_a, label_b)
        self.comparison = compare_runs(a, b) if a is not None and b is not None else None
        self.set_divergence(None)  # any divergence shown belonged to the previous pair
        self._show_texts()
        self._show_curves()
        self._show_settings()
        self._name_curves()
        self.summary.setText(self._summary_text())
        self._update_divergence_button()

    def _name_curves(self) -> None:
        """Legends name the runs as the window labels them ("#1", "#3")."""
        la, lb = self._labels
        names = {self.prob_a_curve: la, self.prob_b_curve: lb, self.entropy_a_curve: la, self.entropy_b_curve: lb,
                 self.b_of_a_point: f"{lb}'s p of {la}'s token", **self.divergence_panel.curve_names(la, lb)}
        for legend in self._legends:
            for sample, label in legend.items:
                if sample.item in names:
                    label.setText(names[sample.item])

    def _summary_text(self) -> str:
        a, b, c = self._a, self._b, self.comparison
        if c is None:
            return "Choose two runs to compare."
        la, lb = self._labels
        if c.first_diff is None:
            return f"{la} and {lb} are the same {c.length} tokens."
        d = c.first_diff
        if d >= a.length or d >= b.length:
            longer, shorter = (la, lb) if a.length > b.length else (lb, la)
            return f"{la} and {lb} agree on their first {d} tokens; then {shorter} ends and {longer} goes on."
        pa, pb, pba = c.prob_a[d], c.prob_b[d], c.prob_b_of_a[d]
        text = (f"First difference at position {d}: {quote_piece(a.pieces[d])} vs {quote_piece(b.pieces[d])} "
                f"({la} p {format_percent(pa)}, {lb} p {format_percent(pb)})")
        if math.isfinite(pba):
            text += f"; {lb} gave {quote_piece(a.pieces[d])} {format_percent(pba)}"
        return text + "."

    def diff_span(self, side: str) -> tuple[int, int] | None:
        """Document range of the first differing token in text "a" or "b", if it is shown."""
        return self._diff_spans[side]

    def _show_texts(self) -> None:
        c = self.comparison
        diff = c.first_diff if c is not None else None
        colors = run_colors(self.palette())
        for side, trace, label, edit, title, color in (
                ("a", self._a, self._labels[0], self.text_a, self.title_a, colors[0]),
                ("b", self._b, self._labels[1], self.text_b, self.title_b, colors[1])):
            title.setText(label if trace is None else f"{label}: {trace.n_generated} generated tokens")
            self._diff_spans[side] = self._render_text(edit, trace, diff, color)

    def _render_text(self, edit: QTextEdit, trace: RunTrace | None, diff: int | None,
                     color: QColor) -> tuple[int, int] | None:
        """Prompt dimmed, then the output; the token at `diff` (or the first one after it with text,
        when a character spans several tokens) bold on a tint of the run's colour."""
        edit.clear()
        if trace is None:
            return None
        pal = self.palette()
        base, text = pal.color(QPalette.ColorRole.Base), pal.color(QPalette.ColorRole.Text)
        formats = {"prompt": QTextCharFormat(), "output": QTextCharFormat(), "mark": QTextCharFormat()}
        formats["prompt"].setForeground(mix(text, base, _PROMPT_TEXT_MIX))
        formats["mark"].setBackground(mix(base, color, _MARK_MIX))
        formats["mark"].setFontWeight(QFont.Weight.Bold)
        cursor = QTextCursor(edit.document())
        span = None
        chunk, kind = [], None
        marking = diff is not None and diff < trace.length

        def flush():
            if chunk:
                cursor.insertText("".join(chunk), formats[kind])
                chunk.clear()

        for pos in range(trace.length):
            piece = token_text(trace, pos)
            k = "prompt" if pos < trace.n_prompt else "output"
            if marking and pos >= diff and piece:
                marking = False
                flush()
                start = cursor.position()
                cursor.insertText(piece, formats["mark"])
                span = (start, cursor.position())
                continue
            if k != kind:
                flush()
                kind = k
            chunk.append(piece)
        flush()
        return span

    # --- curves ----------------------------------------------------------------------------------

    def _show_curves(self) -> None:
        c = self.comparison
        if c is None:
            for curve in (self.prob_a_curve, self.prob_b_curve, self.entropy_a_curve, self.entropy_b_curve):
                curve.setData([], [])
            self.b_of_a_point.setData([], [])
            for line in self._diff_lines:
                line.setVisible(False)
            return
        x = np.arange(c.length, dtype=np.float64)
        self.prob_a_curve.setData(x, c.prob_a)
        self.prob_b_curve.setData(x, c.prob_b)
        self.entropy_a_curve.setData(x, c.entropy_a)
        self.entropy_b_curve.setData(x, c.entropy_b)
        d = c.first_diff
        if d is not None and d < c.length and math.isfinite(c.prob_b_of_a[d]):
            self.b_of_a_point.setData([float(d)], [float(c.prob_b_of_a[d])])
        else:
            self.b_of_a_point.setData([], [])
        for line in self._diff_lines:
            line.setVisible(d is not None)
            if d is not None:
                line.setValue(d)

    def describe_position(self, pos: int) -> str:
        """The hover read-out: each run's token, probability and entropy at `pos`."""
        c = self.comparison
        if c is None or not (0 <= pos < c.length):
            return ""
        bits = [f"position {pos}"]
        for trace, label, p, h in ((self._a, self._labels[0], c.prob_a, c.entropy_a),
                                   (self._b, self._labels[1], c.prob_b, c.entropy_b)):
            if pos >= trace.length:
                bits.append(f"{label}: ended")
                continue
            part = f"{label} {quote_piece(trace.pieces[pos])} p {format_percent(float(p[pos]))}"
            if math.isfinite(h[pos]):
                part += f", entropy {float(h[pos]):.2f}"
            bits.append(part)
        return "  ·  ".join(bits)

    def _on_hover(self, plot: pg.PlotWidget, scene_pos: QPointF) -> None:
        vb = plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(scene_pos):
            return
        pos = int(round(vb.mapSceneToView(scene_pos).x()))
        text = self.describe_position(pos)
        if text:
            self.readout.setText(text)

    # --- divergence ------------------------------------------------------------------------------

    def set_divergence_available(self, ok: bool, reason: str) -> None:
        """Whether the engine can compute the divergence now (the runs' model is loaded), and why not."""
        self._available = (bool(ok), reason)
        self._update_divergence_button()

    def _update_divergence_button(self) -> None:
        c = self.comparison
        if c is None:
            ok, reason = False, "Choose two runs to compare first."
        elif not c.same_model:
            ok, reason = False, ("The two runs come from different models: their next-token distributions "
                                 "cannot be compared by one model.")
        else:
            ok, reason = self._available
        self.divergence_panel.set_available(ok, reason)

    def divergence_reason_text(self) -> str:
        return self.divergence_panel.reason_text()

    @property
    def divergence(self) -> Divergence | None:
        return self.divergence_panel.divergence

    def set_divergence(self, div: Divergence | None, message: str = "") -> None:
        """Plot a divergence over run A's positions, or clear the plot and say `message` instead."""
        self.divergence_panel.set_divergence(div, message)

    # --- settings --------------------------------------------------------------------------------

    def differing_settings(self) -> list[str]:
        """Names of the settings rows whose values differ between the two runs."""
        return list(self._differing)

    def _show_settings(self) -> None:
        table = self.settings_table
        self._differing = []
        if self._a is None or self._b is None:
            table.setRowCount(0)
            return
        sa, sb = run_settings(self._a), run_settings(self._b)
        names = list(sa) + [k for k in sb if k not in sa]
        table.setRowCount(len(names))
        table.setHorizontalHeaderLabels(list(self._labels))
        table.setVerticalHeaderLabels(names)
        pal = self.palette()
        tint = QBrush(mix(pal.color(QPalette.ColorRole.Base), pal.color(QPalette.ColorRole.Highlight), 0.25))
        bold = QFont()
        bold.setBold(True)
        for row, name in enumerate(names):
            va, vb = sa.get(name, "—"), sb.get(name, "—")
            differs = va != vb
            if differs:
                self._differing.append(name)
            for col, value in enumerate((va, vb)):
                item = QTableWidgetItem(value)
                item.setToolTip(plain_tip(value))  # prompts and stop strings are untrusted text
                if differs:
                    item.setBackground(tint)
                    item.setFont(bold)
                table.setItem(row, col, item)

    # --- palette ---------------------------------------------------------------------------------

    def _restyle(self) -> None:
        self._apply_palette()
        self._show_texts()
        self._show_settings()

    def _apply_palette(self) -> None:
        pal = self.palette()
        fg = pal.color(QPalette.ColorRole.Text)
        color_a, color_b = run_colors(pal)
        for plot in (self.prob_plot, self.entropy_plot, self.divergence_panel.plot):
            style_plot(plot, pal)
        for legend in self._legends:
            legend.setLabelTextColor(fg)
            for _sample, label in legend.items:
                label.setText(label.text)  # labels take a new colour when re-rendered
        # B dashed over A: where the runs agree both stay visible.
        for curve, color, style in ((self.prob_a_curve, color_a, Qt.PenStyle.SolidLine),
                                    (self.prob_b_curve, color_b, Qt.PenStyle.DashLine),
                                    (self.entropy_a_curve, color_a, Qt.PenStyle.SolidLine),
                                    (self.entropy_b_curve, color_b, Qt.PenStyle.DashLine)):
            curve.setPen(pg.mkPen(color, width=2, style=style))
        self.b_of_a_point.setBrush(pg.mkBrush(color_b))
        self.b_of_a_point.setPen(pg.mkPen(fg))
        self.divergence_panel.apply_palette(pg.mkPen(color_a, width=2), pg.mkPen(color_b, width=2))
        dashed = pg.mkPen(fg, width=1, style=Qt.PenStyle.DashLine)
        for line in self._diff_lines:
            line.setPen(dashed)
