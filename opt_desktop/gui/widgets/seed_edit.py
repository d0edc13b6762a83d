"""A seed field with a "random" checkbox; random means no fixed seed (None)."""

from __future__ import annotations

import random

from PySide6.QtCore import QRegularExpression, Signal
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLineEdit, QWidget

from ...engine.messages.errors import SettingsError

_MAX_SEED = 2**63 - 1  # GenerationSettings' bound; a QSpinBox stops at 2**31 - 1, hence a line edit


class SeedEdit(QWidget):
    edited = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._number = QLineEdit()
        self._number.setValidator(QRegularExpressionValidator(QRegularExpression(r"\d{0,19}"), self._number))
        self._number.setPlaceholderText("seed")
        self._random = QCheckBox("random")
        self._random.setChecked(True)
        self._number.setEnabled(False)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._number, 1)
        layout.addWidget(self._random)

        self._random.toggled.connect(self._on_random_toggled)
        self._number.textEdited.connect(lambda _text: self.edited.emit())

    def value(self) -> int | None:
        if self._random.isChecked():
            return None
        text = self._number.text().strip()
        if not text:
            raise SettingsError("seed: enter a whole number, or tick 'random'")
        seed = int(text)
        if seed > _MAX_SEED:
            raise SettingsError(f"seed: must be at most {_MAX_SEED}")
        return seed

    def set_value(self, seed: int | None) -> None:
        self._random.blockSignals(True)
        try:
            self._random.setChecked(seed is None)
        finally:
            self._random.blockSignals(False)
        if seed is not None:
            self._number.setText(str(seed))
        self._number.setEnabled(seed is not None)

    def random_checkbox(self) -> QCheckBox:
        return self._random

    def number_edit(self) -> QLineEdit:
        return self._number

    def _on_random_toggled(self, checked: bool) -> None:
        self._number.setEnabled(not checked)
        if not checked and not self._number.text():
            # Show a concrete seed the user can note down or change, rather than an empty box.
            self._number.setText(str(random.randrange(2**31)))
        self.edited.emit()
