"""A download's progress as a person reads it: bytes of the total, rate and time left, over a bar.

The engine reports a download job's bytes as JobProgress(done, total); the rate and the time left
are worked out here, from when the download was started.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from PySide6.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

from ...formatting import format_bytes

STEPS = 1000  # the bar's resolution: a tenth of a percent


@dataclass(frozen=True)
class DownloadProgress:
    done: int = 0  # bytes
    total: int = 0  # bytes known so far (grows as files start)
    elapsed: float = 0.0  # seconds

    @property
    def rate(self) -> float:
        """Bytes a second, averaged over the download so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total else None

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate; None while unknown."""
        if not self.total or self.rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)


def time_left(seconds: float | None) -> str:
    if seconds is None:
        return "time left unknown"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min left"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60} s left"
    return f"{seconds} s left"


def describe_progress(repo_id: str, p: DownloadProgress) -> str:
    """'Downloading facebook/opt-125m: 120 MB of 250 MB · 5.2 MB/s · 23 s left'."""
    of = f" of {format_bytes(p.total)}" if p.total else ""
    return (f"Downloading {repo_id}: {format_bytes(p.done)}{of} · {format_bytes(int(p.rate))}/s · "
            f"{time_left(p.eta)}")


class DownloadProgressView(QWidget):
    """Hidden until a download starts; a busy bar until its size is known."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.label = QLabel(self)
        self.bar = QProgressBar(self)
        self.bar.setRange(0, STEPS)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.bar)
        self._repo_id = ""
        self._t0 = 0.0
        self._stopping = False
        self.hide()

    def start(self, repo_id: str) -> None:
        self._repo_id, self._t0, self._stopping = repo_id, time.monotonic(), False
        self.bar.setRange(0, 0)
        self.label.setText(f"Starting the download of {repo_id}…")
        self.show()

    def show_bytes(self, done: int, total: int) -> DownloadProgress:
        p = DownloadProgress(done=done, total=total, elapsed=time.monotonic() - self._t0)
        if not self._stopping:
            self.label.setText(describe_progress(self._repo_id, p))
        if p.fraction is None:
            self.bar.setRange(0, 0)
        else:
            self.bar.setRange(0, STEPS)
            self.bar.setValue(round(p.fraction * STEPS))
        return p

    def stopping(self) -> None:
        self._stopping = True
        self.label.setText(f"Stopping the download of {self._repo_id}…")

    def finish(self) -> None:
        self.hide()
