"""Messages at the top of the window: each stays until the person deals with it, and several stack.

An error is one calm line; where the log holds a traceback, "Details…" shows it, copyable. Text is
shown as plain text, never rich text: a message may quote token text or a file name.
"""

from __future__ import annotations

from typing import Callable, Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

MAX_MESSAGES = 6  # older ones give way; the log keeps them all

_ICONS = {"error": QStyle.StandardPixmap.SP_MessageBoxCritical,
          "warning": QStyle.StandardPixmap.SP_MessageBoxWarning,
          "info": QStyle.StandardPixmap.SP_MessageBoxInformation}


class Message(QFrame):
    """One message: icon, text, its action buttons, Details… when there is a traceback, and ×."""

    def __init__(self, banner: "MessageBanner", text: str, kind: str, actions, details: str, key):
        super().__init__(banner)
        self.banner, self.kind, self.key, self.details = banner, kind, key, details
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        # Palette roles, not fixed colours, so it reads in light and dark themes alike.
        self.setBackgroundRole(QPalette.ColorRole.ToolTipBase)
        self.setForegroundRole(QPalette.ColorRole.ToolTipText)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 3, 4, 3)
        icon = QLabel()
        icon.setPixmap(self.style().standardIcon(_ICONS.get(kind, _ICONS["info"])).pixmap(18, 18))
        self.label = QLabel(text)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.label.setForegroundRole(QPalette.ColorRole.ToolTipText)
        layout.addWidget(icon)
        layout.addWidget(self.label, 1)
        self.buttons: list[QPushButton] = []
        for label, callback in actions:
            button = QPushButton(label)
            button.clicked.connect(lambda _=False, cb=callback: (self.dismiss(), cb()))
            layout.addWidget(button)
            self.buttons.append(button)
        if details:
            more = QPushButton("Details…")
            more.setToolTip("The error's technical details, as written to the log")
            more.clicked.connect(self.show_details)
            layout.addWidget(more)
            self.details_button = more
        close = QToolButton()
        close.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_DialogCloseButton))
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.dismiss)
        layout.addWidget(close)

    @property
    def text(self) -> str:
        return self.label.text()

    def dismiss(self) -> None:
        self.banner.remove(self)

    def show_details(self) -> QDialog:
        dialog = QDialog(self.window())
        dialog.setWindowTitle("Error details")
        layout = QVBoxLayout(dialog)
        layout.addWidget(QLabel(self.text))
        box = QPlainTextEdit(self.details)
        box.setReadOnly(True)
        box.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        layout.addWidget(box)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = buttons.addButton("Copy", QDialogButtonBox.ButtonRole.ActionRole)
        copy.clicked.connect(lambda: (box.selectAll(), box.copy()))
        buttons.rejected.connect(dialog.reject)
        layout.addWidget(buttons)
        dialog.resize(760, 420)
        dialog.open()
        return dialog


class MessageBanner(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(2)
        self.messages: list[Message] = []
        self.hide()

    def show_message(self, text: str, kind: str = "error", actions: Sequence[tuple[str, Callable[[], None]]] = (),
                     details: str = "", key: str | None = None) -> Message:
        """Add a message under the others; one with the same `key` replaces it, and the same text
        already shown is not repeated. Each action is a button that dismisses the message and runs
        its callback."""
        for old in list(self.messages):
            if key is not None and old.key == key:
                self.remove(old)
            elif old.text == text and old.kind == kind and not actions:
                return old  # already in view (with whatever actions it came with)
        while len(self.messages) >= MAX_MESSAGES:
            self.remove(self.messages[0])
        message = Message(self, text, kind, actions, details, key)
        self.messages.append(message)
        self._layout.addWidget(message)
        self.show()
        return message

    def show_error(self, text: str, details: str = "", key: str | None = None) -> Message:
        return self.show_message(text, "error", details=details, key=key)

    def show_notice(self, text: str, key: str | None = None) -> Message:
        return self.show_message(text, "info", key=key)

    def remove(self, message: Message) -> None:
        if message in self.messages:
            self.messages.remove(message)
            message.hide()
            message.deleteLater()
        self.setVisible(bool(self.messages))

    def dismiss(self, key: str | None = None) -> None:
        """Remove the message with `key`; without a key, every message (the person asked for it)."""
        for message in list(self.messages):
            if key is None or message.key == key:
                self.remove(message)

    def text(self) -> str:
        """The newest message's text ("" with none)."""
        return self.messages[-1].text if self.messages else ""

    def texts(self) -> list[str]:
        return [m.text for m in self.messages]

    @property
    def buttons(self) -> list[QPushButton]:
        """Every action button of every message, oldest message first."""
        return [b for m in self.messages for b in m.buttons]
