"""What the app remembers between runs (last model, recent sources). Plain JSON, no Qt."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ..engine.settings import LoadRequest

MAX_RECENT = 8


def config_dir() -> Path:
    override = os.environ.get("OPT_DESKTOP_CONFIG_DIR")  # tests and portable installs
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir("opt-desktop"))


class AppState(BaseModel):
    last_model: LoadRequest | None = None
    recent_sources: list[str] = []
    recent_sessions: list[str] = []
    keep_attention_rows: bool = False
    # The window's size and panel arrangement (Qt's saveGeometry / saveState, base64).
    window_geometry: str | None = None
    window_layout: str | None = None

    @classmethod
    def load(cls) -> "AppState":
        path = config_dir() / "state.json"
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, ValidationError):
            return cls()  # a missing or damaged state file just means a fresh start

    def save(self) -> None:
        path = config_dir() / "state.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.model_dump(mode="json"), indent=2), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass  # remembering is a convenience; never fail the app over it

    def remember(self, request: LoadRequest) -> None:
        self.last_model = request
        if request.source != "demo":
            self.recent_sources = [request.source] + [s for s in self.recent_sources if s != request.source]
            self.recent_sources = self.recent_sources[:MAX_RECENT]

    def remember_session(self, path: str) -> None:
        self.recent_sessions = ([path] + [p for p in self.recent_sessions if p != path])[:MAX_RECENT]

    def forget_session(self, path: str) -> None:
        self.recent_sessions = [p for p in self.recent_sessions if p != path]
