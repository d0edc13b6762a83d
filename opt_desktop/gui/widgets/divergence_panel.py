"""The Compare tab's divergence page: run A's tokens scored again the way run B was run, on request.

A button (with the reason it is off), one line saying what is shown, a plot of how the probability
of A's token changes at each position and of the KL divergence between the two next-token
distributions, and a read-out of the hovered position. The window computes the divergence
(`requested`, then `set_running`, `set_divergence` or `set_message`); the panel only shows it.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ...engine.messages.results import Divergence
from ..rich_text import plain_tip

HINT = ("Re-scores run A's tokens the way run B was run (its head mask and hidden tokens) and plots, per "
        "position, how the probability of A's token changes and the KL divergence between the two "
        "next-token distributions.")
BUTTON_TEXT = "Compute divergence (needs the model)"


class DivergencePanel(QWidget):
    requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.divergence: Divergence | None = None
        self._available: tuple[bool, str] = (False, "Choose two runs to compare first.")
        self._running = False
        self._delta = np.zeros(0)
        self._base_label = "A"

        self.button = QPushButton(BUTTON_TEXT)
        self.button.clicked.connect(self.requested)
        self.reason = QLabel()
        self.reason.setWordWrap(True)
        self.reason.setTextFormat(Qt.TextFormat.PlainText)  # it names a model
        self.message = QLabel(HINT)
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.plot = pg.PlotWidget()
        self.plot.getPlotItem().setMenuEnabled(False)
        self.plot.showGrid(x=False, y=True, alpha=0.3)
        self.plot.setLabel("bottom", "position")
        self.legend = self.plot.addLegend(offset=(-10, 10))
        self.delta_curve = self.plot.plot([], [], connect="finite", name="Δ p of A's token (B − A)")
        self.kl_curve = self.plot.plot([], [], connect="finite", name="KL(A ‖ B), nats")
        self.readout = QLabel()
        self.readout.setMinimumWidth(10)
        bar = QHBoxLayout()
        bar.addWidget(self.button)
        bar.addWidget(self.reason, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.message)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.readout)
        self.plot.scene().sigMouseMoved.connect(self._on_hover)
        self._update_button()

    def curve_names(self, la: str, lb: str) -> dict:
        """The legend's names when the runs are labelled `la` and `lb` ("#1", "#3")."""
        self._base_label = la
        return {self.delta_curve: f"Δ p of {la}'s token ({lb} − {la})", self.kl_curve: f"KL({la} ‖ {lb}), nats"}

    # --- whether it can run ------------------------------------------------------------------------

    def set_available(self, ok: bool, reason: str) -> None:
        """Whether the engine can compute the divergence now, and why not."""
        self._available = (bool(ok), reason)
        self._update_button()

    def set_running(self, running: bool) -> None:
        self._running = bool(running)
        if running:
            self.message.setText("Computing the divergence…")
        self._update_button()

    def set_progress(self, done: int, total: int) -> None:
        """The divergence is one pass: there are no steps to count."""

    def set_message(self, text: str) -> None:
        self.set_divergence(None, text)

    def reason_text(self) -> str:
        return self.reason.text()

    def _update_button(self) -> None:
        ok, reason = self._available
        self.button.setEnabled(ok and not self._running)
        self.button.setToolTip(plain_tip(HINT if ok else reason))
        self.reason.setText("" if ok else reason)

    # --- the result --------------------------------------------------------------------------------

    def set_divergence(self, div: Divergence | None, message: str = "") -> None:
        """Plot a divergence over run A's positions, or clear the plot and say `message` instead."""
        self.divergence = div
        if div is None:
            self._delta = np.zeros(0)
            self.delta_curve.setData([], [])
            self.kl_curve.setData([], [])
            self.message.setText(message or HINT)
            self.readout.setText("")
            return
        base = np.asarray(div.logprob_base, np.float64)
        kl = np.asarray(div.kl, np.float64)
        self._delta = np.exp(np.asarray(div.logprob_other, np.float64)) - np.exp(base)
        x = np.arange(len(base), dtype=np.float64)
        self.delta_curve.setData(x, self._delta)
        self.kl_curve.setData(x, kl)
        if message:
            self.message.setText(message)
        elif np.isfinite(kl).any():
            worst = int(np.nanargmax(kl))
            self.message.setText(
                f"Largest KL divergence {kl[worst]:.3g} nats at position {worst}; "
                f"largest drop in the probability of {self._base_label}'s token {np.nanmin(self._delta):+.3f}.")
        else:
            self.message.setText("No position has a divergence (nothing was predicted).")
        self.readout.setText("Hover the plot to read the values at a position.")

    def _on_hover(self, scene_pos: QPointF) -> None:
        div = self.divergence
        vb = self.plot.getPlotItem().getViewBox()
        if div is None or not vb.sceneBoundingRect().contains(scene_pos):
            return
        pos = int(round(vb.mapSceneToView(scene_pos).x()))
        if 0 <= pos < len(self._delta):
            self.readout.setText(f"position {pos}: Δ p = {self._delta[pos]:+.4g}, KL = {float(div.kl[pos]):.4g} nats")

    def apply_palette(self, pen_a, pen_b) -> None:
        self.delta_curve.setPen(pen_a)
        self.kl_curve.setPen(pen_b)
