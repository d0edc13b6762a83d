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
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ...engine.messages.results import Patching
from ..rich_text import plain_tip
from .heatmap import Axis, Heatmap
from .job_controls import JobControls

COLORMAP = "viridis"
EXPLANATION = ("Each cell copies one piece of the clean run into the corrupted run and measures the target's "
               "probability: 0 (dark) changes nothing, 1 (bright) brings back the clean run's answer.")


def _row_name(r: int) -> str:
    return "embed (the input of layer 0)" if r == 0 else f"output of layer {r - 1}"


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

        self.residual = Heatmap(Axis("hidden-state row", self._row_tick, _row_name),
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
        maps = QSplitter(Qt.Orientation.Horizontal)
        maps.addWidget(self.residual)
        maps.addWidget(self.head_map)
        maps.setStretchFactor(0, 3)
        maps.setStretchFactor(1, 2)

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

    def _request(self) -> None:
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
        self.residual.set_data(result.prob_normalised)
        self.head_map.set_data(result.head_prob_normalised if result.head_prob.size else np.zeros((0, 0)))
        line = (f"Target {target!r}: p = {result.clean_prob:.3g} in the clean run, {result.corrupt_prob:.3g} in the "
                f"corrupted run.")
        if not np.isfinite(result.prob_normalised).any():
            line += " The two runs give it the same probability: there is nothing to recover."
        self.status.setText(line + " " + EXPLANATION)

    # --- read-outs ----------------------------------------------------------------------------------

    def _row_tick(self, r: int) -> str:
        return "embed" if r == 0 else str(r - 1)

    def _position_tick(self, t: int) -> str:
        return self._tokens[t] if 0 <= t < len(self._tokens) else str(t)

    def _position_name(self, t: int) -> str:
        return f"position {t} {self._position_tick(t)!r}"

    def _raw(self, value: float) -> str:
        r = self.result
        return (f"p = {value:.4g} (clean {r.clean_prob:.4g}, corrupted {r.corrupt_prob:.4g})"
                if math.isfinite(value) else "not computed")

    def _describe_residual(self, row: int, col: int) -> str:
        return (f"{_row_name(row)}, {self._position_name(col)}: {self._raw(float(self.result.prob[row, col]))}, "
                f"recovered {float(self.result.prob_normalised[row, col]):.3g}")

    def _describe_head(self, layer: int, head: int) -> str:
        return (f"L{layer}H{head}: {self._raw(float(self.result.head_prob[layer, head]))}, "
                f"recovered {float(self.result.head_prob_normalised[layer, head]):.3g}")

    def _update_buttons(self) -> None:
        ok, reason = self._available
        self.run_button.setEnabled(ok and not self._running and self.clean.count() > 1)
        self.stop_button.setEnabled(self._running)
        if not ok and reason and not self._running and self.result is None:
            self.status.setText(reason)
