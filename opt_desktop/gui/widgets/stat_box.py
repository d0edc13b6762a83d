"""The "Statistic:" choice above the hidden-state and attention views: which of a run's statistics
(norm, mean… or entropy, sink weight…) they show, by key, with its label and what it means."""

from __future__ import annotations

from typing import Mapping, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget


class StatBox(QWidget):
    changed = Signal()  # another statistic was chosen

    def __init__(self, stats: Sequence[tuple[str, str]], tips: Mapping[str, str] | None = None, tip: str = "",
                 parent: QWidget | None = None):
        """`stats`: (key, label) pairs, in menu order; `tips` explains each key (the box's tooltip follows
        the choice), else `tip` explains them all."""
        super().__init__(parent)
        self._tips = dict(tips or {})
        self.combo = QComboBox()
        for key, label in stats:
            self.combo.addItem(label, key)
            if key in self._tips:
                self.combo.setItemData(self.combo.count() - 1, self._tips[key], Qt.ItemDataRole.ToolTipRole)
        self.combo.setToolTip(tip)
        self.combo.currentIndexChanged.connect(self._on_changed)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Statistic:"))
        layout.addWidget(self.combo)
        self._on_changed()

    @property
    def stat(self) -> str:
        """The key of the chosen statistic."""
        return self.combo.currentData()

    def label(self) -> str:
        return self.combo.currentText()

    def set_stat(self, key: str) -> None:
        self.combo.setCurrentIndex(self.combo.findData(key))

    def _on_changed(self, _index: int = 0) -> None:
        if self.stat in self._tips:
            self.combo.setToolTip(self._tips[self.stat])
        self.changed.emit()
