"""Head importance: how much the log-probability of a run's generated tokens changes when each
attention head is scaled (0 = removed), as a layers × heads heatmap centred on zero.

The engine does the work, one head at a time; this view starts and stops it (`run_requested`,
`stop_requested`) and shows what comes back (`set_progress`, `set_result`, partial results included:
heads not done yet are blank). Until there is a result, one sentence stands where the map will be
(with the model's head count once `set_model_shape` has told it): no empty map, no 0–1 colour bar.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QPalette, QPen
from PySide6.QtWidgets import (
    QDoubleSpinBox, QGraphicsRectItem, QHBoxLayout, QLabel, QProgressBar, QPushButton, QStackedWidget, QVBoxLayout,
    QWidget,
)

from ...engine.messages.results import HeadImportance
from ..colors import follow_palette
from ..rich_text import plain_tip
from .head_mask_editor import head_cell_name
from .heatmap import Axis, Heatmap

COLORMAP = "CET-D1"  # blue - white - red: negative (the head helped) blue, positive red
EXPLANATION = ("Each head is scaled in turn and the run's generated tokens are scored again: the colour is "
               "the change in their total log-probability. Blue: the text became less likely (the head "
               "helped write it); red: more likely. Hatched: not measured yet. Click a head to inspect it.")


def format_delta(v: float) -> str:
    return "not computed yet" if not math.isfinite(v) else f"Δ log p = {v:+.3g}"


class HeadImportanceView(QWidget):
    run_requested = Signal(float)  # the scale each head gets in turn (0 = ablate)
    stop_requested = Signal()
    head_clicked = Signal(int, int)  # (layer, head): head `head` of decoder.layers[layer]

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.result: HeadImportance | None = None
        self._running = False
        self._shape: tuple[int, int] | None = None  # (layers, heads) of the shown run's model, once known
        self._available: tuple[bool, str] = (False, "Generate a run first.")
        self._message = ""  # how the last measurement ended, when it gave no map (an error)

        self.scale_spin = QDoubleSpinBox()
        self.scale_spin.setRange(0.0, 2.0)
        self.scale_spin.setSingleStep(0.1)
        self.scale_spin.setDecimals(2)
        self.scale_spin.setPrefix("scale each head ×")
        self.scale_spin.setSpecialValueText("ablate each head (×0)")
        self.scale_spin.setToolTip("The factor each head's output is scaled by in turn: 0 removes it")
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Measure every head on the current run (needs the run's model loaded)")
        self.start_button.clicked.connect(lambda: self.run_requested.emit(float(self.scale_spin.value())))
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the head being measured; the heads done so far stay shown")
        self.stop_button.clicked.connect(self.stop_requested)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m heads")
        self.progress.hide()  # until a measurement starts: "0 / 1 heads" would say nothing true
        bar = QHBoxLayout()
        bar.addWidget(self.scale_spin)
        bar.addWidget(self.start_button)
        bar.addWidget(self.stop_button)
        bar.addWidget(self.progress, 1)
        bar.addStretch(0)  # takes the room while the progress bar is hidden, none beside it

        self.reason = QLabel()  # why Start is disabled
        self.reason.setWordWrap(True)
        self.reason.setTextFormat(Qt.TextFormat.PlainText)  # it names a model, whose label is a folder name
        self.status = QLabel()  # what the map shows
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.explanation = QLabel(EXPLANATION)
        self.explanation.setWordWrap(True)
        self.heatmap = Heatmap(Axis("layer"), Axis("head"), colormap=COLORMAP,
                               value_format=format_delta, cell_name=head_cell_name,
                               hint="Hover a head to read its effect; click it to inspect it.")
        self.heatmap.set_colorbar_label("Δ log p of the generated tokens")
        self.heatmap.cell_clicked.connect(self.head_clicked)
        # Heads not measured yet are NaN, which the image leaves transparent: hatch what shows through,
        # so they cannot be mistaken for the white "no effect" of the colour map.
        self._not_measured = QGraphicsRectItem()
        self._not_measured.setZValue(-10)
        self._not_measured.setPen(QPen(Qt.PenStyle.NoPen))
        self.heatmap.plot.addItem(self._not_measured, ignoreBounds=True)
        self.placeholder = QLabel()
        self.placeholder.setWordWrap(True)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setTextFormat(Qt.TextFormat.PlainText)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.placeholder)
        self.pages.addWidget(self.heatmap)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.reason)
        layout.addWidget(self.status)
        layout.addWidget(self.explanation)
        layout.addWidget(self.pages, 1)
        self._update_controls()
        self._update_status()
        follow_palette(self, self._apply_palette)
        self._apply_palette()

    # --- state from the window -------------------------------------------------------------------

    def set_available(self, ok: bool, reason: str) -> None:
        """Whether a measurement can start now (a finished run, its model loaded), and why not."""
        self._available = (bool(ok), reason)
        self._update_controls()

    def set_model_shape(self, shape: tuple[int, int] | None) -> None:
        """(layers, heads) of the model the shown run was made with (None: no run), for the head count."""
        self._shape = (int(shape[0]), int(shape[1])) if shape is not None else None
        if not self._running:
            self.progress.setRange(0, self._n_heads() or 1)
        self._update_status()

    def set_running(self, running: bool) -> None:
        self._running = bool(running)
        if self._running:
            self._message = ""
            self.progress.setRange(0, self._n_heads() or 1)
            self.progress.setValue(0)
        self._update_controls()
        self._update_status()

    def set_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(int(total), 1))
        self.progress.setValue(min(int(done), max(int(total), 1)))
        self._update_status()

    def set_message(self, text: str) -> None:
        """One line on how the last measurement ended, where the map would be."""
        self._message = text
        self._update_status()

    def _n_heads(self) -> int | None:
        return self._shape[0] * self._shape[1] if self._shape is not None else None

    def set_result(self, imp: HeadImportance | None) -> None:
        """Show a (possibly partial) result; None clears the map."""
        self.result = imp
        self._message = ""
        if imp is None:
            self.heatmap.clear()
            self._not_measured.setVisible(False)
        else:
            delta = np.asarray(imp.delta, np.float32)
            self.heatmap.set_data(delta)
            n_layers, n_heads = delta.shape
            self._not_measured.setRect(QRectF(-0.5, -0.5, n_heads, n_layers))
            self._not_measured.setVisible(True)
            finite = np.abs(delta[np.isfinite(delta)])
            reach = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
            self.heatmap.set_fixed_levels((-reach, reach))  # centred on 0: white = no effect
        self._update_status()

    def _update_status(self) -> None:
        imp = self.result
        self.progress.setVisible(self._running or imp is not None)
        self.status.setVisible(imp is not None)
        if imp is None:
            self.pages.setCurrentWidget(self.placeholder)
            self.placeholder.setText("\n\n".join(t for t in (self._message, self._placeholder_text()) if t))
            self.status.setText("")
            return
        self.pages.setCurrentWidget(self.heatmap)
        delta = np.asarray(imp.delta)
        done = int(np.isfinite(delta).sum())
        what = "removing" if imp.scale == 0 else f"scaling by ×{imp.scale:g}"
        if self._running:
            state = f" ({done} of {delta.size} heads so far)"
        else:
            state = "" if imp.completed else f" (stopped: {done} of {delta.size} heads measured)"
        text = (f"Effect of {what} each head on the log-probability of the generated tokens "
                f"(baseline {imp.baseline_logprob:.3f}){state}.")
        if done:
            layer, head = np.unravel_index(int(np.nanargmin(delta)), delta.shape)
            text += (f" Most needed: {head_cell_name(int(layer), int(head))} "
                     f"(Δ log p = {float(delta[layer, head]):+.3g}).")
        self.status.setText(f"{self._message} {text}" if self._message else text)

    def _placeholder_text(self) -> str:
        n = self._n_heads()
        if self._running:
            done = self.progress.value()
            if n:
                return f"Measuring the heads: {done} of {n} done. The map appears when all are measured or you press Stop."
            return "Measuring the heads…"
        if n:
            layers, heads = self._shape
            what = (f"each of the {n} heads ({layers} layer{'s' if layers != 1 else ''} × "
                    f"{heads} head{'s' if heads != 1 else ''})")
        else:
            what = "each head"
        return (f"Press Start to measure {what} of the shown run's model: each head is scaled in turn and "
                "the run's generated tokens are scored again. The map of their effects appears here.")

    def _update_controls(self) -> None:
        ok, reason = self._available
        self.start_button.setEnabled(ok and not self._running)
        self.scale_spin.setEnabled(not self._running)
        self.stop_button.setEnabled(self._running)
        self.start_button.setToolTip("Measure every head on the current run" if ok else plain_tip(reason))
        self.reason.setText(reason if not ok and not self._running else "")
        self.reason.setVisible(bool(self.reason.text()))

    # --- palette ---------------------------------------------------------------------------------

    def _apply_palette(self) -> None:
        color = self.palette().color(QPalette.ColorRole.Text)
        color.setAlphaF(0.35)
        brush = QBrush(color, Qt.BrushStyle.BDiagPattern)
        self._not_measured.setBrush(brush)
