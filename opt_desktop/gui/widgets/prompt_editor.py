"""The prompt box, with a live count of its tokens against the model's context.

The count is of what the person typed. OPT reads a start-of-text token `</s>` before every prompt;
the tooltip says so, and it is counted where it matters: against the context.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Callable

from PySide6.QtCore import Qt, QTimer, Signal
from superqt.utils import ensure_main_thread
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QVBoxLayout, QWidget

PLACEHOLDER = "Type a prompt, then press Ctrl+Enter to generate…"
COUNT_DELAY_MS = 150  # tokenising a long prompt on every keystroke would make typing lag


class PromptEditor(QWidget):
    """A multi-line prompt editor. `text_changed` fires on every edit; the count follows after a pause."""

    text_changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._count_fn: Callable[[str], int | None] | None = None
        self._context: int | None = None
        self._count: int | None = None

        self.edit = QPlainTextEdit(self)
        self.edit.setPlaceholderText(PLACEHOLDER)
        self.counter = QLabel(self)
        self.counter.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.counter.setTextInteractionFlags(Qt.TextInteractionFlag.NoTextInteraction)

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addStretch(1)
        row.addWidget(self.counter)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.edit, 1)
        layout.addLayout(row)
        self.setFocusProxy(self.edit)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(COUNT_DELAY_MS)
        self._timer.timeout.connect(self._recount)
        self.edit.textChanged.connect(self._on_text_changed)
        self._show_count()

    # --- public API -----------------------------------------------------------------------------

    def text(self) -> str:
        return self.edit.toPlainText()

    def set_text(self, text: str) -> None:
        self.edit.setPlainText(text)

    def set_counter(self, count_fn: Callable[[str], int | None | Future] | None, context_length: int | None) -> None:
        """How to count tokens (None before a model is loaded) and the model's context, in tokens.
        `count_fn` counts the prompt as the model reads it, the leading `</s>` included; it may answer
        later, with a Future (an engine in another process counts there)."""
        self._count_fn = count_fn
        self._context = context_length
        self._timer.stop()
        self._recount()  # a new model: show its count at once, no need to wait for typing

    def token_count(self) -> int | None:
        """The tokens typed, as last counted (None when there is nothing to count with); the model
        reads one more, the `</s>` before them."""
        return None if self._count is None else max(self._count - 1, 0)

    def is_over_context(self) -> bool:
        """No room is left for an answer: `</s>` and the prompt fill the model's context (the engine
        refuses such a prompt)."""
        return self._count is not None and self._context is not None and self._count >= self._context

    # --- counting -------------------------------------------------------------------------------

    def _on_text_changed(self) -> None:
        self.text_changed.emit()
        if self._count_fn is not None:
            self._timer.start()  # restarts: counts once typing pauses

    def _recount(self) -> None:
        count = None
        text = self.text()
        if self._count_fn is not None:
            try:
                count = self._count_fn(text)
            except Exception:  # a count is a hint; a tokenizer error must not break typing
                count = None
        if isinstance(count, Future):
            count.add_done_callback(lambda f, t=text: self._counted(f, t))
            return  # the shown count stays until the answer comes
        self._count = count
        self._show_count()

    @ensure_main_thread
    def _counted(self, future: Future, text: str) -> None:
        """A count that came back later (on the engine's thread: hopped here first)."""
        if text != self.text() or future.cancelled():
            return  # typing went on: a newer count is on its way
        self._count = None if future.exception() is not None else future.result()
        self._show_count()

    def _show_count(self) -> None:
        typed, ctx = self.token_count(), self._context
        over = self.is_over_context()
        start = "OPT reads a start-of-text token </s> before the prompt: it takes one more place in the context."
        if typed is None:
            text = "– tokens"
            tip = "Load a model to count the prompt's tokens." if self._count_fn is None else "Could not count tokens."
        elif ctx is None:
            text = f"{typed} tokens"
            tip = f"Tokens in the prompt. {start}"
        else:
            text = f"{typed} / {ctx} tokens"
            tip = (f"Tokens in the prompt / the model's context ({ctx} tokens, prompt and generated text together). "
                   f"{start}")
            if over:
                beyond = self._count - ctx
                text += f" ⚠ {beyond} over the model's context" if beyond else " ⚠ no room left for an answer"
                tip += " Shorten the prompt: the model cannot read more than its context."
        self.counter.setText(text)
        self.counter.setToolTip(tip)
        font = self.counter.font()
        font.setBold(over)  # the warning is the bold text and its words; no colour the theme could clash with
        self.counter.setFont(font)
        # A dim "– tokens" reads as "not available yet".
        self.counter.setForegroundRole(QPalette.ColorRole.PlaceholderText if typed is None
                                       else QPalette.ColorRole.WindowText)
