"""The views' splitters, made one way: parts side by side (or one over the other) that share the room
by their stretch factors and can be resized but never collapsed out of sight."""

from __future__ import annotations

from typing import Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSplitter, QWidget


def splitter(orientation: Qt.Orientation, *parts: tuple[QWidget, int],
             sizes: Sequence[int] | None = None) -> QSplitter:
    """`parts`: (widget, stretch factor) in order; `sizes`: the first sizes, in pixels."""
    split = QSplitter(orientation)
    for i, (widget, stretch) in enumerate(parts):
        split.addWidget(widget)
        split.setStretchFactor(i, stretch)
    if sizes is not None:
        split.setSizes(list(sizes))
    split.setChildrenCollapsible(False)
    return split
