"""What the app remembers between runs (last model, recent sources and sessions). Plain JSON, no Qt.

A state file that cannot be read never stops a start: what can be read of it is kept, the file is
moved to the damaged folder and `AppState.load` hands back a line saying so (`AppState.notes`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, PrivateAttr, ValidationError

from .. import folders
from ..engine.messages.errors import SettingsError
from ..engine.messages.settings import LoadRequest
from ..engine.messages.threads import AUTO, ThreadSetting, parse_threads
from ..atomic import write_text_atomic
from ..session.damaged import move_aside

log = logging.getLogger(__name__)

MAX_RECENT = 8
STATE_FILE = "state.json"
_MAX_STATE_BYTES = 1 << 20
_MAX_PATH_CHARS = 4096


def config_dir() -> Path:
    """The app's config folder (one resolution for all: opt_desktop.folders)."""
    return folders.config_dir()


_MAX_LAYOUT_CHARS = 64 * 1024


def state_path() -> Path:
    return config_dir() / STATE_FILE


def _recent(value, what: str, problems: list[str]) -> list[str]:
    if not isinstance(value, list):
        problems.append(f"{what} is not a list")
        return []
    good = [v for v in value if isinstance(v, str) and v.strip() and len(v) <= _MAX_PATH_CHARS and "\x00" not in v]
    if len(good) != len(value):
        problems.append(f"{len(value) - len(good)} of its {what} entries are not file names")
    return list(dict.fromkeys(good))[:MAX_RECENT]


class AppState(BaseModel):
    last_model: LoadRequest | None = None
    recent_sources: list[str] = []
    recent_sessions: list[str] = []
    threads: ThreadSetting = AUTO  # the engine's CPU threads: "auto" follows the machine's load
    # The window's size and panel arrangement (Qt's saveGeometry / saveState, base64).
    window_geometry: str | None = None
    window_layout: str | None = None
    # Lines for the person about a state file that could not be read (set by load()).
    _notes: list[str] = PrivateAttr(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return self._notes

    @classmethod
    def load(cls) -> "AppState":
        """The remembered state; never raises. A missing file is a fresh start; a damaged one (or one
        with damaged entries) keeps what can be read, is moved aside and leaves a line in `notes`."""
        path = state_path()
        try:
            with open(path, "rb") as f:
                raw = f.read(_MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            state = cls()
            state._notes.append(f"The remembered state {path} could not be read ({exc.strerror or exc}); "
                                "starting without it.")
            return state
        problems: list[str] = []
        data: dict = {}
        if len(raw) > _MAX_STATE_BYTES:
            problems.append("it is far larger than a state file")
        else:
            try:
                loaded = json.loads(raw.decode("utf-8"))
                if isinstance(loaded, dict):
                    data = loaded
                else:
                    problems.append("it is not a JSON object")
            except (UnicodeDecodeError, ValueError, RecursionError):
                problems.append("it is not valid JSON")
        values: dict = {}
        if "last_model" in data and data["last_model"] is not None:
            try:
                values["last_model"] = LoadRequest.model_validate(data["last_model"])
            except (ValidationError, TypeError, ValueError):
                problems.append("its last model is not a model request")
        for key in ("recent_sources", "recent_sessions"):
            if key in data:
                values[key] = _recent(data[key], key.replace("_", " "), problems)
        if "threads" in data:
            try:
                values["threads"] = parse_threads(data["threads"])
            except SettingsError:
                problems.append("its threads setting is not 'auto' or a number of threads")
        for key in ("window_geometry", "window_layout"):  # Qt's own bytes, base64: checked by Qt when applied
            value = data.get(key)
            if isinstance(value, str) and len(value) <= _MAX_LAYOUT_CHARS:
                values[key] = value
            elif value is not None:
                problems.append(f"its {key.replace('_', ' ')} is not a saved window layout")
        state = cls(**values)
        if problems:
            note = move_aside(path, "; ".join(problems), "remembered state")
            if values:
                note += " What could be read of it is kept."
                state.save()
            state._notes.append(note)
        return state

    def save(self) -> None:
        path = state_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(self.model_dump(mode="json"), indent=2))
        except OSError:
            log.warning("could not save the remembered state to %s", path, exc_info=True)
            # remembering is a convenience; never fail the app over it

    def remember(self, request: LoadRequest) -> None:
        self.last_model = request
        if request.source != "demo":
            self.recent_sources = [request.source] + [s for s in self.recent_sources if s != request.source]
            self.recent_sources = self.recent_sources[:MAX_RECENT]

    def remember_session(self, path: str) -> None:
        self.recent_sessions = ([path] + [p for p in self.recent_sessions if p != path])[:MAX_RECENT]

    def forget_session(self, path: str) -> None:
        self.recent_sessions = [p for p in self.recent_sessions if p != path]
