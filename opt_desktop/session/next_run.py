"""What the next run carries besides the settings panel: where it comes from, and its interventions.

Qt-free plain data, so the window's commands build requests from it (never from widgets) and the
tests can drive it without a window.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.messages.errors import SettingsError
from ..engine.messages.interventions_spec import normalize_head_mask
from ..engine.messages.settings import HeadScale
from .trace import RunTrace


@dataclass(frozen=True)
class RunOrigin:
    """Where a run comes from: the run it forks or continues (`parent`), the position it replaced
    there (a fork), and a label such as "re-run of #1". Travels with the run's job."""

    parent: int | None = None
    fork_position: int | None = None
    label: str = ""

    def apply(self, trace: RunTrace) -> None:
        trace.parent, trace.fork_position, trace.label = self.parent, self.fork_position, self.label


class Interventions:
    """The head mask and the hidden prompt positions the next run will carry.

    Hidden positions belong to one prompt (the shown run's): a different prompt cannot use them.
    """

    def __init__(self) -> None:
        self.head_mask: tuple[HeadScale, ...] = ()
        self.hidden_positions: tuple[int, ...] = ()
        self.hidden_prompt: str | None = None  # the prompt the hidden positions are positions of

    def set_head_mask(self, mask) -> None:
        self.head_mask = normalize_head_mask(mask)

    def set_hidden(self, positions, prompt: str | None) -> None:
        """Hide these prompt positions (0, the leading `</s>`, never is) of `prompt` in the next run."""
        self.hidden_positions = tuple(sorted({int(p) for p in positions if int(p) > 0}))
        self.hidden_prompt = prompt if self.hidden_positions else None

    def take_run(self, trace: RunTrace | None) -> None:
        """Start from what a run was made with (a reopened session, a restored autosave)."""
        if trace is None:
            self.head_mask, self.hidden_positions, self.hidden_prompt = (), (), None
            return
        self.set_head_mask(trace.started.head_mask)
        self.set_hidden(trace.started.hidden_positions, trace.started.prompt)

    def for_prompt(self, prompt: str) -> dict:
        """The interventions as request fields for a run of `prompt`; SettingsError when the hidden
        positions belong to another prompt."""
        if self.hidden_positions and prompt != self.hidden_prompt:
            raise SettingsError("The hidden tokens belong to the shown run's prompt: regenerate that prompt, "
                                "or clear them (right-click in the output).")
        return dict(head_mask=self.head_mask, hidden_positions=self.hidden_positions)
