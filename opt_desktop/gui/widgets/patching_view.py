"""Where does the fact live? Activation patching between a clean run and a corrupted run.

The person picks two runs of the session whose prompts have the same number of tokens (say "The
Eiffel Tower is in" and "The Colosseum is in") and a target token; the engine copies the clean
run's residual stream into the corrupted run at every (row, position), and each head's output at
all positions, and records the target's probability. Both maps are normalised: 0 is the corrupted
run, 1 the clean one; hovering a cell shows the raw probabilities.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from ...engine.messages.results import Patching
from ...engine.messages.rows import row_description, row_tick
from ..rich_text import plain_tip
from .heatmap import Axis, Heatmap
from .job_controls import JobControls
from .splitter import splitter

COLORMAP = "viridis"  # recovered, 0 … 1
DIFFERENCE_COLORMAP = "CET-D1"  # p − corrupted: blue down, white none, red up
RUN_TIP = "Patch the clean run into the corrupted one, one piece at a time"
EXPLANATION = ("Each cell copies one piece of the clean run into the corrupted run and measures the target's "
               "probability: 0 (dark) changes nothing, 1 (bright) brings back the clean run's answer.")


class PatchingView(JobControls, QWidget):
    # clean run, corrupted run, target text ("" = the clean run's next token), patch heads too
    run_requested = Signal(int, int, str, bool)
    stop_requested = Signal()
    RUNNING_TEXT = "Patching…"
    IDLE_TEXT = EXPLANATION

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.result: Patching | None = None
        self._tokens: list[str] = []
        self._target = ""
        self._make_job_controls("Patch", "patches", EXPLANATION)

        self.clean = QComboBox()
        self.corrupt = QComboBox()
        for combo, tip in ((self.clean, "The run whose answer is measured (e.g. \"The Eiffel Tower is in\")"),
                           (self.corrupt, "The run it is patched into: a prompt of the same length that "
                                          "changes the fact (e.g. \"The Colosseum is in\")")):
            combo.setToolTip(tip)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(24)
        self.target = QLineEdit()
        self.target.setPlaceholderText("the clean run's next token")
        self.target.setToolTip("One token whose probability is measured; empty: the token the clean run generated first")
        self.heads = QCheckBox("heads too")
        self.heads.setChecked(True)
        self.heads.setToolTip("Also patch each head's output (all positions): a layers × heads map")

        grid = QGridLayout()
        grid.addWidget(QLabel("clean run"), 0, 0)
        grid.addWidget(self.clean, 0, 1)
        grid.addWidget(QLabel("corrupted run"), 1, 0)
        grid.addWidget(self.corrupt, 1, 1)
        grid.addWidget(QLabel("target token"), 0, 2)
        grid.addWidget(self.target, 0, 3)
        grid.addWidget(self.heads, 1, 2)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.progress, 1)
        grid.addLayout(buttons, 1, 3)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)

        self.residual = Heatmap(Axis("hidden-state row", row_tick, row_description, first_apart=True),
                                Axis("position", self._position_tick, self._position_name),
                                colormap=COLORMAP, hint="Hover a cell for the probabilities it gave.")
        self.residual.describe = self._describe_residual
        self.residual.set_fixed_levels((0.0, 1.0))
        self.residual.set_colorbar_label("recovered (0 corrupted … 1 clean)")
        self.head_map = Heatmap(Axis("layer"), Axis("head"), colormap=COLORMAP,
                                hint="Hover a head for the probability it gave.")
        self.head_map.describe = self._describe_head
        self.head_map.set_fixed_levels((0.0, 1.0))
        self.head_map.set_colorbar_label("recovered")
        maps = splitter(Qt.Orientation.Horizontal, (self.residual, 3), (self.head_map, 2))

        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.status)
        layout.addWidget(maps, 1)
        self._update_buttons()

    # --- choosing ---------------------------------------------------------------------------------

    def set_choices(self, labels: list[str]) -> None:
        """The session's runs, by title; keeps the chosen ones where they still exist."""
        for combo, fallback in ((self.clean, 0), (self.corrupt, 1)):
            current = combo.currentIndex()
            combo.blockSignals(True)
            combo.clear()
            for i, label in enumerate(labels):
                combo.addItem(label, i)
                combo.setItemData(i, plain_tip(label), Qt.ItemDataRole.ToolTipRole)  # titles quote prompts
            if labels:
                combo.setCurrentIndex(current if 0 <= current < len(labels) else min(fallback, len(labels) - 1))
            combo.blockSignals(False)
        self._update_buttons()

    def request(self) -> None:
        """Ask for a job with the choices shown (what the Run button does)."""
        if self.clean.count() and self.corrupt.count():
            self.run_requested.emit(self.clean.currentData(), self.corrupt.currentData(), self.target.text(),
                                    self.heads.isChecked())

    # --- progress and result ------------------------------------------------------------------------

    def set_result(self, result: Patching | None, tokens: list[str] | None = None, target: str = "") -> None:
        """Show a result; `tokens[t]` is the clean run's token at position t, `target` the target's text."""
        self.result = result
        if result is None:
            self.residual.clear()
            self.head_map.clear()
            self.status.setText(EXPLANATION)
            return
        self._tokens = list(tokens) if tokens is not None else [f"#{int(i)}" for i in result.clean_ids]
        self._target = target
        residual = result.shown(result.prob)
        heads = result.shown(result.head_prob) if result.head_prob.size else np.zeros((0, 0))
        if result.normalisable:
            levels, colormap = (0.0, 1.0), COLORMAP
        else:  # centred on no change, as far either way as the largest change
            finite = np.abs(np.concatenate([residual[np.isfinite(residual)], heads[np.isfinite(heads)]]))
            reach = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
            levels, colormap = (-reach, reach), DIFFERENCE_COLORMAP
        for heatmap, values in ((self.residual, residual), (self.head_map, heads)):
            heatmap.set_colormap(colormap)
            heatmap.set_fixed_levels(levels)
            heatmap.set_colorbar_label(result.shown_what)
            heatmap.set_data(values)
        line = (f"Target {target!r}: p = {result.clean_prob:.4g} in the clean run, {result.corrupt_prob:.4g} in the "
                f"corrupted run.")
        self.status.setText(f"{line} {result.too_close or EXPLANATION}")

    # --- read-outs ----------------------------------------------------------------------------------

    def _position_tick(self, t: int) -> str:
        return self._tokens[t] if 0 <= t < len(self._tokens) else str(t)

    def _position_name(self, t: int) -> str:
        return f"position {t} {self._position_tick(t)!r}"

    def _raw(self, value: float) -> str:
        r = self.result
        return f"p = {value:.4g} (clean {r.clean_prob:.4g}, corrupted {r.corrupt_prob:.4g})"

    def _describe(self, where: str, values: np.ndarray, index: tuple[int, int]) -> str:
        r = self.result
        value = float(values[index])
        shown = float(r.shown(values[index]))
        how = f"recovered {shown:.3g}" if r.normalisable else f"p − corrupted {shown:+.4g}"
        return f"{where}: {self._raw(value)}, {how}" if math.isfinite(value) else f"{where}: not computed"

    def _describe_residual(self, row: int, col: int) -> str:
        return self._describe(f"{row_description(row)}, {self._position_name(col)}", self.result.prob, (row, col))

    def _describe_head(self, layer: int, head: int) -> str:
        return self._describe(f"L{layer}H{head}", self.result.head_prob, (layer, head))

    def _update_buttons(self) -> None:
        ok, reason = self._available
        self.run_button.setEnabled(ok and not self._running)
        self.stop_button.setEnabled(self._running)
        self.run_button.setToolTip(plain_tip(reason) if not ok and reason else RUN_TIP)
        if not ok and reason and not self._running and self.result is None:
            self.status.setText(reason)
