"""The session's runs as a tree: forks and continuations hang under the run they branch from."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QTreeWidget, QTreeWidgetItem, QWidget

from ...session import RunTrace
from ...session.session import Session

_REASONS = {"length": "max tokens", "eos": "end of text", "stop_string": "stop string", "cancelled": "stopped", "error": "failed"}
INDEX_ROLE = Qt.ItemDataRole.UserRole


def _shorten(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def run_title(index: int, trace: RunTrace, piece_fn: Callable[[int], str] | None = None) -> str:
    """One line naming a run: its number, how it differs from its parent, how it decoded, how it ended."""
    s = trace.started.settings
    parts = [f"#{index + 1}"]
    if trace.label:
        parts.append(trace.label)
    if trace.fork_position is not None:
        tok = trace.token_ids[trace.fork_position] if trace.fork_position < trace.length else None
        piece = trace.pieces[trace.fork_position] if tok is not None else "?"
        parts.append(f"fork at {trace.fork_position} → {piece!r}")
    elif trace.parent is not None:
        parts.append("continued")
    parts.append(f"sampled, seed {trace.started.seed}" if s.get("do_sample") else "greedy")
    if trace.started.head_mask:
        parts.append(f"{len(trace.started.head_mask)} heads masked")
    if trace.started.hidden_positions:
        parts.append(f"{len(trace.started.hidden_positions)} tokens hidden")
    done = trace.finished
    parts.append(f"{trace.n_generated} tokens" + (f", {_REASONS.get(done.reason, done.reason)}" if done else " …"))
    return " · ".join(parts)


class RunList(QTreeWidget):
    run_selected = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setColumnCount(1)
        self.setHeaderLabels(["Runs of this session"])
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
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
            item.setText(0, run_title(i, trace))
            prompt = trace.started.prompt or "(token ids)"
            item.setToolTip(0, f"{run_title(i, trace)}\nPrompt: {_shorten(prompt, 200)}\n"
                               f"Model: {trace.started.model.label} ({trace.started.model.dtype})")

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
