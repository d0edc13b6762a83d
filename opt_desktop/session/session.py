"""A session: the runs of one sitting, in the order they were made, forks pointing at their parents."""

from __future__ import annotations

from ..engine.messages.events import ModelInfo
from .trace import RunTrace


class Session:
    def __init__(self, runs: list[RunTrace] | None = None):
        self.runs: list[RunTrace] = list(runs or [])

    def add(self, trace: RunTrace) -> int:
        """Append a run; returns its index (what a fork's `parent` refers to)."""
        self.runs.append(trace)
        return len(self.runs) - 1

    def merge(self, other: "Session", label: str = "") -> list[int]:
        """Append every run of `other` (to compare runs of two files), keeping its forks' tree; the
        runs' new indices. `label` names where they came from in run lists."""
        offset = len(self.runs)
        added = []
        for run in other.runs:
            if run.parent is not None:
                run.parent += offset
            if label:
                run.label = f"{label}: {run.label}" if run.label else label
            added.append(self.add(run))
        return added

    @property
    def model(self) -> ModelInfo | None:
        """The model of the latest run."""
        return self.runs[-1].started.model if self.runs else None

    def children(self, index: int) -> list[int]:
        """Indices of the runs forked from run `index`."""
        return [i for i, run in enumerate(self.runs) if run.parent == index]
