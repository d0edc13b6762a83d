"""What the tabs that run one engine job on demand share (attribution, patching): a Run and a Stop
button, a progress bar counting the job's steps, a status line, and whether the job can run now."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton


class JobControls:
    """Mixin for a QWidget. Subclasses set RUNNING_TEXT, call `_make_job_controls`, lay the widgets out,
    and define `request` (the Run button, also called from outside) and `_update_buttons`."""

    RUNNING_TEXT = "Computing…"
    IDLE_TEXT = ""  # the status line with no job, no result and nothing in the way

    def _make_job_controls(self, run_text: str, unit: str, status: str = "") -> None:
        self._running = False
        self._available: tuple[bool, str] = (False, "")
        self.run_button = QPushButton(run_text)
        self.run_button.clicked.connect(self.request)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop_requested)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setFormat(f"%v / %m {unit}")
        self.status = QLabel(status)
        self.status.setTextFormat(Qt.TextFormat.PlainText)  # messages quote token text
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    def set_available(self, ok: bool, reason: str) -> None:
        """Whether a job can start now (a model is loaded, nothing else runs), and why not."""
        old = self._available[1]
        self._available = (ok, reason)
        if old and self.status.text() == old and reason != old and not self._running:
            self.status.setText(self.IDLE_TEXT)  # the reason shown no longer holds ("wait for the job" after it ended)
        self._update_buttons()

    def set_running(self, running: bool) -> None:
        self._running = running
        if running:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.status.setText(self.RUNNING_TEXT)
        self._update_buttons()

    def set_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)

    def set_message(self, text: str) -> None:
        self.status.setText(text)
