"""Where the engine runs: "This computer" or one of the person's SSH hosts, and the ways to add,
edit and remove a host. The hosts themselves live in the app's state (engine_commands.py keeps them)."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QWidget

from ...engine.process.ssh_host import SshHost

THIS_COMPUTER = "This computer"
_ADD, _EDIT = "add", "edit"  # the data of the two action items


class EngineChooser(QComboBox):
    """`place_chosen(SshHost | None)` when the person picks a place (None: this computer);
    `add_requested()` and `edit_requested(SshHost)` for the items that open the host editor."""

    place_chosen = Signal(object)
    add_requested = Signal()
    edit_requested = Signal(object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._hosts: list[SshHost] = []
        self._current: SshHost | None = None
        self.setToolTip("Where the model runs: this computer, or a GPU server reached with ssh (your keys, "
                        "agent and ~/.ssh/config; never a password prompt).")
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.activated.connect(self._on_activated)
        self._fill()

    # --- public ----------------------------------------------------------------------------------

    def set_hosts(self, hosts: list[SshHost], current: SshHost | None) -> None:
        self._hosts = list(hosts)
        self._current = current
        self._fill()

    def current_host(self) -> SshHost | None:
        return self._current

    def choose(self, host: SshHost | None) -> None:
        """Show `host` as chosen, as if the person had picked it (tests and the host editor use it)."""
        self._current = host
        self._fill()
        self.place_chosen.emit(host)

    # --- internals -------------------------------------------------------------------------------

    def _fill(self) -> None:
        self.blockSignals(True)
        self.clear()
        self.addItem(THIS_COMPUTER, None)
        self.setItemData(0, "The engine runs in a process of its own on this computer.", Qt.ItemDataRole.ToolTipRole)
        for host in self._hosts:
            self.addItem(host.name, host)
            self.setItemData(self.count() - 1, html.escape(f"ssh {host.address}, then {host.command}"),
                             Qt.ItemDataRole.ToolTipRole)
        self.insertSeparator(self.count())
        self.addItem("Add an SSH host…", _ADD)
        if self._current is not None:
            self.addItem(f"Edit {self._current.name}…", _EDIT)
        index = 0
        if self._current is not None:
            index = next((i for i in range(self.count()) if self.itemData(i) == self._current), 0)
        self.setCurrentIndex(index)
        self.blockSignals(False)

    def _on_activated(self, index: int) -> None:
        data = self.itemData(index)
        if data == _ADD or data == _EDIT:
            self._fill()  # the action items are never shown as chosen
            if data == _ADD:
                self.add_requested.emit()
            else:
                self.edit_requested.emit(self._current)
            return
        if data == self._current:
            return
        self._current = data
        self._fill()
        self.place_chosen.emit(data)
