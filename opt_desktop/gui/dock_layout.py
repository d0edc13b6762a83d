"""The window's side panels as docks: where they sit, hiding them all, and remembering the layout.

The views take the centre; the prompt sits above them; the runs and the settings run the full
height on the left and right. Each panel can be resized, moved, floated or closed (View menu), and
the arrangement and the window's size come back at the next start (AppState, base64 of Qt's own
saveGeometry/saveState).
"""

from __future__ import annotations

import base64

from PySide6.QtCore import QByteArray, Qt
from PySide6.QtWidgets import QDockWidget, QMainWindow, QWidget


class DockLayout:
    def __init__(self, window: QMainWindow, panels: list[tuple[str, str, QWidget, Qt.DockWidgetArea]]):
        """`panels`: (title, object name, widget, area) of each dock, in the order the View menu lists them."""
        self.window = window
        for corner, area in ((Qt.Corner.TopLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea),
                             (Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea),
                             (Qt.Corner.TopRightCorner, Qt.DockWidgetArea.RightDockWidgetArea),
                             (Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)):
            window.setCorner(corner, area)
        self.docks: list[QDockWidget] = []
        for title, name, widget, area in panels:
            dock = QDockWidget(title, window)
            dock.setObjectName(name)  # saveState() finds docks by name
            dock.setWidget(widget)
            window.addDockWidget(area, dock)
            self.docks.append(dock)
        self._default = None

    def size(self, vertical: dict[QDockWidget, int], horizontal: dict[QDockWidget, int]) -> None:
        """First sizes, then what the window starts from (before a remembered layout is applied)."""
        self.window.resizeDocks(list(vertical), list(vertical.values()), Qt.Orientation.Vertical)
        self.window.resizeDocks(list(horizontal), list(horizontal.values()), Qt.Orientation.Horizontal)
        self._default = self.window.saveState()

    def toggles(self):
        return [dock.toggleViewAction() for dock in self.docks]

    def set_views_only(self, on: bool) -> None:
        """Hide the side panels so the views take the whole window (and show them again)."""
        for dock in self.docks:
            dock.setVisible(not on)

    def reset(self) -> None:
        if self._default is not None:
            self.window.restoreState(self._default)

    def restore(self, state) -> None:
        for value, apply in ((state.window_geometry, self.window.restoreGeometry),
                             (state.window_layout, self.window.restoreState)):
            if value:
                apply(QByteArray(base64.b64decode(value)))

    def remember(self, state) -> None:
        state.window_geometry = base64.b64encode(bytes(self.window.saveGeometry().data())).decode("ascii")
        state.window_layout = base64.b64encode(bytes(self.window.saveState().data())).decode("ascii")
        state.save()
