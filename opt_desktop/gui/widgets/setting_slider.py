"""A superqt labelled slider (slider + editable value) for one numeric generation setting."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QWidget
from superqt import QLabeledDoubleSlider, QLabeledSlider


class SettingSlider(QWidget):
    """Slider with an editable number beside it.

    `edited` fires only for the user's changes, never for `set_value`. User changes snap to
    `step` (a dragged float slider otherwise yields values like 0.7234 while showing 0.72),
    but `set_value` keeps an imported value exactly, widening the range if it lies outside,
    so whatever was set reads back unchanged.
    """

    edited = Signal()

    def __init__(self, minimum: float, maximum: float, *, step: float = 1, decimals: int = 0,
                 page_step: float | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._is_float = decimals > 0
        self._range = (minimum, maximum)
        self._step = step
        self._decimals = decimals
        self._quiet = False
        self._slider: QLabeledSlider = QLabeledDoubleSlider() if self._is_float else QLabeledSlider()
        if self._is_float:
            self._slider.setDecimals(decimals)
        self._slider.setSingleStep(step)
        self._slider.setPageStep(page_step if page_step is not None else step * 10)
        self._apply_range(minimum, maximum)
        self._slider.valueChanged.connect(self._on_value_changed)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._slider)

    def value(self) -> float | int:
        v = self._slider.value()
        return float(v) if self._is_float else int(v)

    def set_value(self, value: float | int) -> None:
        lo, hi = self._range
        self._quiet = True
        try:
            self._apply_range(min(lo, value), max(hi, value))
            self._slider.setValue(value)
        finally:
            self._quiet = False

    def minimum(self) -> float:
        return self._slider.minimum()

    def maximum(self) -> float:
        return self._slider.maximum()

    def slider(self) -> QLabeledSlider:
        """The superqt widget inside (tests drive it as a user would)."""
        return self._slider

    def _apply_range(self, lo: float, hi: float) -> None:
        was_quiet, self._quiet = self._quiet, True
        try:
            self._slider.setRange(lo, hi)
        finally:
            self._quiet = was_quiet

    def _snap(self, v: float) -> float:
        lo, hi = self.minimum(), self.maximum()
        snapped = round(round(v / self._step) * self._step, self._decimals)
        return min(max(snapped, lo), hi)

    def _on_value_changed(self, v: float) -> None:
        if self._quiet:
            return
        if self._is_float:
            snapped = self._snap(v)
            if snapped != v:
                self._quiet = True
                try:
                    self._slider.setValue(snapped)
                finally:
                    self._quiet = False
        self.edited.emit()
