"""A plain-text box holding stop strings, one per line, with `\\n` standing for a newline."""

from __future__ import annotations

from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QPlainTextEdit, QWidget

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape_stop_string(line: str) -> str:
    r"""`\n` newline, `\t` tab, `\r` carriage return, `\\` one backslash; other backslashes stay as typed."""
    out: list[str] = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line) and line[i + 1] in _ESCAPES:
            out.append(_ESCAPES[line[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def escape_stop_string(s: str) -> str:
    # Backslashes first, so a literal "\n" (two characters) survives the round trip as "\\n".
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


class StopStringsEdit(QPlainTextEdit):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPlaceholderText("one per line, e.g. \\n\\n")
        self.setTabChangesFocus(True)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        # About four lines tall: enough to see a few strings without eating the side panel.
        self.setFixedHeight(QFontMetrics(self.font()).lineSpacing() * 4 + 12)

    def strings(self) -> tuple[str, ...]:
        # Only truly empty lines are skipped: a lone space may be a deliberate stop string.
        return tuple(unescape_stop_string(line) for line in self.toPlainText().split("\n") if line)

    def set_strings(self, strings: tuple[str, ...] | list[str]) -> None:
        self.setPlainText("\n".join(escape_stop_string(s) for s in strings))
