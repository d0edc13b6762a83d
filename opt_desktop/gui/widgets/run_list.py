"""The session's runs as a tree: forks and continuations hang under the run they branch from.

Each run is named in two lines by `session.describe.run_title_lines` (what tells it from its
siblings), with the whole description in its tooltip.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QTreeWidget, QTreeWidgetItem, QWidget

from ...session import RunTrace
from ...session.describe import run_details, run_title, run_title_lines
from ...session.session import Session

INDEX_ROLE = Qt.ItemDataRole.UserRole


def run_tooltip(index: int, trace: RunTrace) -> str:
    """The whole description of a run as rich text; every value escaped (prompts and tokens are untrusted)."""
    rows = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>"
                   for k, v in run_details(index, trace))
    return f"<p>{html.escape(run_title(index, trace))}</p><table>{rows}</table>"


class RunList(QTreeWidget):
    run_selected = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setColumnCount(1)
        self.setHeaderLabels(["Runs of this session"])
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setUniformRowHeights(False)  # names take two lines: a narrow panel still shows what differs
        self.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.setToolTip("Runs of this session; forks and continuations sit under the run they came from")
        self._session: Session | None = None
        self._items: dict[int, QTreeWidgetItem] = {}
        self.currentItemChanged.connect(self._on_current)

    def set_session(self, session: Session | None) -> None:
        self._session = session
        self.refresh()

    def refresh(self) -> None:
        """Rebuild when runs were added; otherwise just retitle (a running run grows)."""
        runs = self._session.runs if self._session is not None else []
        if len(runs) != len(self._items):
            current = self.current_index()
            self.blockSignals(True)
            self.clear()
            self._items = {}
            for i, trace in enumerate(runs):
                parent = self._items.get(trace.parent) if trace.parent is not None else None
                item = QTreeWidgetItem(parent if parent is not None else self)
                item.setData(0, INDEX_ROLE, i)
                self._items[i] = item
            self.expandAll()
            if current is not None and current in self._items:
                self.setCurrentItem(self._items[current])
            self.blockSignals(False)
        for i, trace in enumerate(runs):
            item = self._items[i]
            item.setText(0, "\n".join(run_title_lines(i, trace)))
            item.setToolTip(0, run_tooltip(i, trace))

    def set_current(self, index: int | None) -> None:
        item = self._items.get(index) if index is not None else None
        self.blockSignals(True)
        self.setCurrentItem(item)
        self.blockSignals(False)

    def current_index(self) -> int | None:
        item = self.currentItem()
        return None if item is None else int(item.data(0, INDEX_ROLE))

    def _on_current(self, current: QTreeWidgetItem | None, _previous) -> None:
        if current is not None:
            self.run_selected.emit(int(current.data(0, INDEX_ROLE)))
