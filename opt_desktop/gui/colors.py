"""Colours derived from the Qt palette, so every tint works in light and dark themes."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QWidget


def mix(a: QColor, b: QColor, t: float) -> QColor:
    """`a` blended towards `b` by `t` (clamped to [0, 1]); opaque."""
    t = min(max(t, 0.0), 1.0)
    return QColor.fromRgbF(
        a.redF() + (b.redF() - a.redF()) * t,
        a.greenF() + (b.greenF() - a.greenF()) * t,
        a.blueF() + (b.blueF() - a.blueF()) * t,
    )


class _PaletteFollower(QObject):
    def __init__(self, widget: QWidget, restyle: Callable[[], None]):
        super().__init__(widget)  # lives and dies with the widget
        self._restyle = restyle
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.PaletteChange:
            self._restyle()
        return False  # the widget still gets the event


def follow_palette(widget: QWidget, restyle: Callable[[], None]) -> None:
    """Call `restyle` whenever `widget`'s palette changes (a light/dark switch), so colours taken
    from the palette follow it."""
    _PaletteFollower(widget, restyle)
