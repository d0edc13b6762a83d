"""The app's own folders: config, data (autosaves), cache (offloaded weights), logs, damaged files.

One place decides them, so one override reaches all: with $OPT_DESKTOP_HOME set (tests, portable
installs) each is a subfolder of it; otherwise they are platformdirs' per-user folders. Qt-free.
Nothing here creates a folder: callers create what they write into.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "opt-desktop"
HOME_ENV = "OPT_DESKTOP_HOME"


def _folder(kind: str) -> Path:
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser() / kind
    import platformdirs

    finder = {"config": platformdirs.user_config_dir, "data": platformdirs.user_data_dir,
              "cache": platformdirs.user_cache_dir, "log": platformdirs.user_log_dir}[kind]
    return Path(finder(APP_NAME, appauthor=False))


def config_dir() -> Path:
    """Settings the person made: presets, the remembered model and recent files."""
    return _folder("config")


def data_dir() -> Path:
    """What the app keeps for the person: autosaves."""
    return _folder("data")


def cache_dir() -> Path:
    """What can be rebuilt: weights offloaded to disk."""
    return _folder("cache")


def log_dir() -> Path:
    """The rotating log file."""
    return _folder("log")


def damaged_dir() -> Path:
    """Where a file the app could not read at start-up is moved, so it never blocks a start again."""
    return data_dir() / "damaged"
