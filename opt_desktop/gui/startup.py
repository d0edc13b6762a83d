"""The checks a start makes before the window is built, without Qt, in one call that never raises.

`startup_checks()` reads the remembered state and the presets, lists the autosaves a crash left
behind and removes the temporary files of saves that were killed. Whatever it cannot read is moved
to the damaged folder (opt_desktop.folders.damaged_dir) and named in one line of `messages`, for
the window to show until the person dismisses them; nothing it finds can stop the app starting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .. import folders
from ..presets import PresetStore
from ..atomic import remove_stale_temps_in
from ..session.autosave import Autosave, RecoveredSession
from .app_state import AppState

log = logging.getLogger(__name__)


@dataclass
class StartupReport:
    state: AppState
    presets: PresetStore
    recoverable: list[RecoveredSession] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # one line each, for the person
    removed: list[Path] = field(default_factory=list)  # temporary files of killed saves, deleted


def startup_checks(autosave: Autosave | None = None) -> StartupReport:
    """Everything a start needs from disk, checked; never raises (a surprise is logged and named)."""
    messages: list[str] = []
    try:
        state = AppState.load()
        messages += state.notes
    except Exception:  # noqa: BLE001 - a start must never fail over remembered settings
        log.exception("reading the remembered state failed")
        state = AppState()
        messages.append("The remembered state could not be read (details are in the log); starting without it.")
    try:
        presets = PresetStore()
        messages += presets.warnings
    except Exception:  # noqa: BLE001
        log.exception("reading the presets failed")
        presets = PresetStore(folders.damaged_dir() / "no-presets")  # empty: built-ins only
        messages.append("The presets could not be read (details are in the log); only the built-in presets "
                        "are available.")
    report = StartupReport(state=state, presets=presets, messages=messages)
    try:
        autosave = autosave if autosave is not None else Autosave()
        report.removed += autosave.remove_leftovers()
        found, lines = autosave.scan()
        report.recoverable = found
        messages += lines
    except Exception:  # noqa: BLE001
        log.exception("looking for autosaves failed")
        messages.append("Looking for autosaves left by a crash failed (details are in the log).")
    try:
        # Killed saves leave their temporary files beside the file they were replacing: in the app's
        # own folders, and in the folders of the sessions the person worked on lately.
        places = [folders.config_dir()] + [Path(p).parent for p in state.recent_sessions]
        report.removed += remove_stale_temps_in(places)
    except Exception:  # noqa: BLE001
        log.exception("removing leftover temporary files failed")
    for path in report.removed:
        log.info("removed %s, left by a save that was killed", path)
    return report
