"""Why this token? Attribution of one generated token to every token before it, as a bar chart.

The person picks a generated token (right-click in the Output view, or a row of the token table),
a method and, optionally, an alternative to compare against; the engine computes the scores and
this view shows one horizontal bar per input token, positive (this token made the target more
likely) to the right, negative to the left. The Output view shades the same scores.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...engine.messages.results import Attribution
from ..rich_text import plain_tip
from .heatmap import IndexAxis, style_plot
from .job_controls import JobControls

METHODS = (("ig", "Integrated gradients"), ("ixg", "Input × gradient"))
POSITIVE, NEGATIVE = QColor(200, 60, 50), QColor(50, 100, 200)  # red: for the target; blue: against it
EXPLANATION = ("Each bar is how much that input token's embedding pushed the model towards the target token "
               "(summed over the embedding). Red pushes towards it, blue away from it.")


def score_color(score: float, scale: float) -> QColor | None:
    """The shade of one score on a scale of ±`scale` (None for no shade)."""
    if not math.isfinite(score) or scale <= 0:
        return None
    base = POSITIVE if score >= 0 else NEGATIVE
    c = QColor(base)
    c.setAlphaF(min(1.0, abs(score) / scale) * 0.85)
    return c


class AttributionView(JobControls, QWidget):
    run_requested = Signal(str, int, object)  # method, steps, alternative token id (None: log p of the target)
    stop_requested = Signal()
    position_clicked = Signal(int)  # an input token of the chart

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.result: Attribution | None = None
        self._pieces: list[str] = []
        self._make_job_controls("Attribute", "steps")

        self.target = QLabel()
        self.target.setTextFormat(Qt.TextFormat.PlainText)
        self.target.setWordWrap(True)
        self.method = QComboBox()
        for key, text in METHODS:
            self.method.addItem(text, key)
        self.method.setToolTip("Integrated gradients (Gauss–Legendre points from a zero embedding) or the "
                               "plain input × gradient")
        self.steps = QSpinBox()
        self.steps.setRange(1, 512)
        self.steps.setValue(32)
        self.steps.setPrefix("steps ")
        self.steps.setToolTip("Integration points of integrated gradients")
        self.method.currentIndexChanged.connect(lambda: self.steps.setEnabled(self.method.currentData() == "ig"))
        self.versus = QComboBox()
        self.versus.setToolTip("Attribute the target's log-probability, or its logit minus an alternative's")
        self.run_button.setToolTip("Compute the scores for the chosen token (needs the run's model loaded)")
        controls = QHBoxLayout()
        for w in (self.method, self.steps, self.versus):
            controls.addWidget(w)
        controls.addWidget(self.run_button)
        controls.addWidget(self.stop_button)
        controls.addWidget(self.progress, 1)

        self.readout = QLabel(EXPLANATION)
        self.readout.setTextFormat(Qt.TextFormat.PlainText)
        self.readout.setWordWrap(True)

        self._axis = IndexAxis("left")
        self.plot = pg.PlotWidget(axisItems={"left": self._axis})
        item = self.plot.getPlotItem()
        item.setMenuEnabled(False)
        item.getViewBox().invertY(True)
        item.setLabel("bottom", "attribution score")
        item.showGrid(x=True, y=False, alpha=0.3)
        self.bars = pg.BarGraphItem(x0=[], y=[], height=0.8, width=[])
        self.plot.addItem(self.bars)
        self.plot.addItem(pg.InfiniteLine(0, angle=90, pen=pg.mkPen((128, 128, 128))))
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.plot.scene().sigMouseClicked.connect(self._on_clicked)

        layout = QVBoxLayout(self)
        layout.addWidget(self.target)
        layout.addLayout(controls)
        layout.addWidget(self.status)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.readout)
        style_plot(self.plot, self.palette())
        self.set_target(None)

    # --- what to attribute ----------------------------------------------------------------------

    def set_target(self, position: int | None, piece: str = "", alternatives=(), logprob: float | None = None) -> None:
        """The token to explain: its position, text, and the alternatives it can be compared against
        ((token id, text), ...)."""
        self._position = position
        self.versus.clear()
        self.versus.addItem("its log-probability", None)
        for token_id, text in alternatives:
            self.versus.addItem(f"its logit minus {text!r}'s", int(token_id))
        if position is None:
            self.target.setText("Right-click a generated token in the Output view and choose "
                                "\"Why this token?\" to see which earlier tokens made it.")
        else:
            p = f", p = {math.exp(logprob):.3g}" if logprob is not None and math.isfinite(logprob) else ""
            self.target.setText(f"Why {piece!r} at position {position}{p}?")
        self._update_buttons()

    def request(self) -> None:
        """Ask for a job with the choices shown (what the Run button does)."""
        if self._position is not None:
            self.run_requested.emit(self.method.currentData(), int(self.steps.value()), self.versus.currentData())

    # --- progress and result ----------------------------------------------------------------------

    def set_result(self, result: Attribution | None, pieces: list[str] | None = None) -> None:
        """Show the scores; `pieces[i]` is the text of result.token_ids[i]."""
        self.result = result
        if result is None:
            self._pieces = []
            self.bars.setOpts(x0=[], y=[], width=[], brushes=[])
            self.status.setText("")
            return
        scores = np.asarray(result.scores, dtype=np.float64)
        self._pieces = list(pieces) if pieces is not None else [f"#{int(i)}" for i in result.token_ids]
        scale = float(np.nanmax(np.abs(scores))) if scores.size else 0.0
        brushes = [score_color(float(s), scale) or QColor(0, 0, 0, 0) for s in scores]
        n = len(scores)
        self.bars.setOpts(x0=np.minimum(scores, 0), y=np.arange(n), width=np.abs(scores), height=0.8,
                          brushes=brushes, pens=[pg.mkPen(None)] * n)
        self._axis.count = n
        self._axis.label_fn = lambda i: f"{i} {self._pieces[i]!r}" if 0 <= i < n else ""
        self._axis.picture = None
        self.plot.getPlotItem().getViewBox().autoRange()
        how = "input × gradient" if result.method == "ixg" else f"integrated gradients, {result.steps} steps"
        parts = [f"{how}."]
        if result.method == "ig":
            gap = result.value - result.baseline_value
            parts.append(f"The scores sum to {scores.sum():.4g}; f(input) − f(baseline) = {gap:.4g}.")
        if result.note:
            parts.append(result.note)
        self.status.setText(" ".join(parts))

    # --- hover and clicks -------------------------------------------------------------------------

    def _index_at(self, scene_pos) -> int | None:
        if self.result is None or not self.plot.sceneBoundingRect().contains(scene_pos):
            return None
        y = self.plot.getPlotItem().getViewBox().mapSceneToView(scene_pos).y()
        i = int(round(y))
        return i if 0 <= i < len(self.result.scores) else None

    def _on_mouse_moved(self, scene_pos) -> None:
        i = self._index_at(scene_pos)
        if i is None:
            self.readout.setText(EXPLANATION)
            return
        self.readout.setText(f"position {i} {self._pieces[i]!r}: score {float(self.result.scores[i]):+.4g}")

    def _on_clicked(self, event) -> None:
        i = self._index_at(event.scenePos())
        if i is not None and event.button() == Qt.MouseButton.LeftButton:
            self.position_clicked.emit(i)

    def _update_buttons(self) -> None:
        ok, reason = self._available
        self.run_button.setEnabled(ok and self._position is not None and not self._running)
        self.stop_button.setEnabled(self._running)
        self.run_button.setToolTip(plain_tip(reason) if not ok and reason else
                                   "Compute the scores for the chosen token")
        if not ok and reason and not self._running and self.result is None:
            self.status.setText(reason)

    def changeEvent(self, event) -> None:  # noqa: N802
        super().changeEvent(event)
        if event.type() == event.Type.PaletteChange:
            style_plot(self.plot, self.palette())
