"""How the connection to an engine on a server stands: its steps with a progress bar while it connects
(connecting, authenticating, starting the engine, reading its devices), then the engine's release and
the server's GPUs and RAM; after a failure, that it is not connected, and Reconnect (the failure's one
line is in the window's banner). Hidden for this computer."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from ...engine.process.ssh import ConnectStep

_STAGES = ("connecting", "authenticating", "starting", "greeted", "ready")


class ConnectionStatus(QWidget):
    reconnect_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = "none"  # "none" (this computer), "connecting", "ready" or "failed"
        self.label = QLabel(self)
        self.label.setTextFormat(Qt.TextFormat.PlainText)  # a server's name and ssh's words are not markup
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.label.setWordWrap(True)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, len(_STAGES))
        self.progress.setMaximumWidth(180)
        self.progress.setTextVisible(False)
        self.reconnect_button = QPushButton("Reconnect", self)
        self.reconnect_button.setToolTip("Connect to the server again (the model must then be loaded again).")
        self.reconnect_button.clicked.connect(self.reconnect_requested)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.reconnect_button)
        self.show_local()

    def show_local(self) -> None:
        self.state = "none"
        self.label.clear()
        self.hide()

    def show_step(self, step: ConnectStep) -> None:
        self.state = "ready" if step.stage == "ready" else "connecting"
        self.label.setText(step.text)
        self.label.setToolTip(html.escape(step.text, quote=False))  # a tooltip may be read as rich text
        self.progress.setValue(_STAGES.index(step.stage) + 1)
        self.progress.setVisible(step.stage != "ready")
        self.reconnect_button.hide()
        self.show()

    def show_failure(self, name: str, line: str) -> None:
        """Not connected to `name` any more (or never): the banner has `line`, this keeps it as a tooltip."""
        self.state = "failed"
        self.label.setText(f"Not connected to {name}.")
        self.label.setToolTip(html.escape(line, quote=False))
        self.progress.hide()
        self.reconnect_button.show()
        self.show()
