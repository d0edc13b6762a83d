"""How many CPU threads the engine computes with: "auto" (chosen and re-chosen for the machine's load)
or a fixed number. Plain data, no torch: the CLI, the settings file and the window check it here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from .errors import SettingsError

AUTO = "auto"
MOST_THREADS = 1024  # far above any CPU's cores; a larger number is a typing mistake
ThreadSetting = Union[Literal["auto"], int]


def parse_threads(value: object) -> ThreadSetting:
    """"auto" or a whole number from 1 up (an int, or text such as "4" or " Auto "); SettingsError
    with one readable line otherwise."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if text.isdigit():
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MOST_THREADS:
        return value
    raise SettingsError(f"threads must be 'auto' or a whole number from 1 to {MOST_THREADS}, not {value!r}")


@dataclass(frozen=True)
class ThreadsRequest:
    """Use this thread setting from now on (between two decode steps if a generation is running)."""

    threads: ThreadSetting = AUTO

    def __post_init__(self) -> None:
        object.__setattr__(self, "threads", parse_threads(self.threads))  # checked on both sides of the pipe


@dataclass(frozen=True)
class ThreadsState:
    """What the engine's worker uses now: the setting, the threads it computes with, and the most it
    would use on this machine (the cores it may run on)."""

    setting: ThreadSetting
    threads: int
    most: int
