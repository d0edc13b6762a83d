"""Add, edit or remove an SSH host: its name, user@host, port, identity file and the command that
starts the engine there. What is typed is checked as an SshHost (one line under the form when it is
not one); nothing secret is asked for, since ssh logs in with keys only."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...engine.messages.errors import SettingsError
from ...engine.process.ssh_host import DEFAULT_COMMAND, SshHost

REMOVED = 2  # the dialog's result when the person removed the host (Accepted is 1)


class SshHostDialog(QDialog):
    """`host()` is the host as typed once the dialog is accepted; `removed` when Remove was pressed."""

    def __init__(self, parent: QWidget | None = None, host: SshHost | None = None,
                 taken: tuple[str, ...] = ()):
        """`taken`: the names other hosts already have."""
        super().__init__(parent)
        self.setWindowTitle("SSH host" if host is None else f"SSH host {host.name}")
        self.setMinimumWidth(560)  # room for a key's path and a venv's engine command
        self._original = host
        self._taken = {t for t in taken if host is None or t != host.name}
        self._host: SshHost | None = None
        self.removed = False

        self.name_edit = QLineEdit(self)
        self.name_edit.setPlaceholderText("gpu-server")
        self.destination_edit = QLineEdit(self)
        self.destination_edit.setPlaceholderText("user@gpu.example.org, or a Host of ~/.ssh/config")
        self.port_spin = QSpinBox(self)
        self.port_spin.setRange(0, 65535)
        self.port_spin.setSpecialValueText("ssh's default")  # 0: 22, or what ~/.ssh/config says
        self.identity_edit = QLineEdit(self)
        self.identity_edit.setPlaceholderText("empty: your agent and ssh's default keys")
        browse = QPushButton("Browse…", self)
        browse.clicked.connect(self._choose_key)
        identity_row = QHBoxLayout()
        identity_row.addWidget(self.identity_edit, 1)
        identity_row.addWidget(browse)
        self.command_edit = QLineEdit(self)
        self.command_edit.setText(DEFAULT_COMMAND)
        self.command_edit.setToolTip("What ssh runs on the server to start the engine: the opt-desktop-engine of an "
                                     "OPT Desktop of the same release, e.g. ~/venvs/opt/bin/opt-desktop-engine.")

        form = QFormLayout()
        form.addRow("Name", self.name_edit)
        form.addRow("User@host", self.destination_edit)
        form.addRow("Port", self.port_spin)
        form.addRow("Identity file", identity_row)
        form.addRow("Engine command", self.command_edit)
        note = QLabel("ssh logs in with your keys and agent only (never a password prompt) and checks the host "
                      "key as it always does: connect once in a terminal to accept a new server's key.", self)
        note.setWordWrap(True)
        self.error_label = QLabel(self)
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c92a2a;")

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel,
                                        self)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        if host is not None:
            self.remove_button = self.buttons.addButton("Remove", QDialogButtonBox.ButtonRole.DestructiveRole)
            self.remove_button.clicked.connect(self._remove)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)
        if host is not None:
            self.set_host(host)

    def set_host(self, host: SshHost) -> None:
        self.name_edit.setText(host.name)
        self.destination_edit.setText(host.destination)
        self.port_spin.setValue(host.port or 0)
        self.identity_edit.setText(host.identity_file or "")
        self.command_edit.setText(host.command)

    def host(self) -> SshHost | None:
        return self._host

    def typed_host(self) -> SshHost:
        """The form as an SshHost; SettingsError with one line when it is not one."""
        name = self.name_edit.text().strip() or self.destination_edit.text().strip()
        if name in self._taken:
            raise SettingsError(f"Another host is already called {name}: give this one another name.")
        options = self._original.options if self._original is not None else ()
        return SshHost.parse(name=name, destination=self.destination_edit.text(),
                             port=self.port_spin.value() or None, identity_file=self.identity_edit.text(),
                             command=self.command_edit.text() or DEFAULT_COMMAND, options=options)

    def accept(self) -> None:
        try:
            self._host = self.typed_host()
        except SettingsError as exc:
            self.error_label.setText(str(exc))
            return
        super().accept()

    def _remove(self) -> None:
        self.removed = True
        self.done(REMOVED)

    def _choose_key(self) -> None:
        start = str(Path.home() / ".ssh")
        path, _ = QFileDialog.getOpenFileName(self, "Choose a private key", start)
        if path:
            self.identity_edit.setText(path)
