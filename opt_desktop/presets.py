"""Named generation presets: three built-ins plus the user's own, kept in one JSON file.

Qt-free so the CLI can offer the same presets as the settings panel.
File format: ``{"version": 1, "presets": {name: GenerationSettings fields}}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from . import folders
from .engine.messages.errors import SettingsError
from .engine.messages.settings import GenerationSettings
from .atomic import write_text_atomic
from .session.damaged import move_aside
from .session.describe import counted

PRESETS_FILE = "presets.json"
_FORMAT_VERSION = 1
_MAX_NAME = 80
_MAX_FILE_BYTES = 4 << 20

BUILTIN_PRESETS: Mapping[str, GenerationSettings] = MappingProxyType({
    # Only do_sample differs from the defaults, so the sampling fields a greedy
    # generation_config.json leaves out come back unchanged on import.
    "Greedy": GenerationSettings(do_sample=False),
    "Balanced": GenerationSettings(do_sample=True, temperature=0.7, top_k=50, top_p=0.9,
                                   repetition_penalty=1.1),
    "Creative": GenerationSettings(do_sample=True, temperature=1.0, top_k=0, top_p=0.95,
                                   max_new_tokens=128),
})


def default_presets_folder() -> Path:
    return folders.config_dir()


class PresetStore:
    """Built-in presets (read-only) and user presets (saved to `folder`/presets.json).

    A missing file is simply "no user presets". A file that cannot be read leaves the
    built-ins working, is moved to the damaged folder (opt_desktop.folders.damaged_dir) at once,
    so it never stands in the way again and is never silently overwritten, and puts one line
    naming it in `warnings`. Constructing a store never raises.
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_presets_folder()
        self.path = self.folder / PRESETS_FILE
        self.warnings: list[str] = []
        self._user: dict[str, GenerationSettings] = {}
        self._load()

    # --- queries --------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Built-ins first in their fixed order, then user presets alphabetically."""
        return list(BUILTIN_PRESETS) + sorted(self._user, key=str.casefold)

    def __contains__(self, name: object) -> bool:
        return name in BUILTIN_PRESETS or name in self._user

    def is_builtin(self, name: str) -> bool:
        return name in BUILTIN_PRESETS

    def get(self, name: str) -> GenerationSettings:
        if name in BUILTIN_PRESETS:
            return BUILTIN_PRESETS[name]
        try:
            return self._user[name]
        except KeyError:
            raise SettingsError(f"There is no preset called {name!r}") from None

    # --- changes --------------------------------------------------------------------------

    def save(self, name: str, settings: GenerationSettings) -> str:
        """Add or overwrite a user preset and write the file; returns the cleaned name."""
        name = self._check_name(name)
        if not isinstance(settings, GenerationSettings):
            raise SettingsError("A preset must be GenerationSettings")
        previous = self._user.get(name)
        self._user[name] = settings
        try:
            self._write()
        except SettingsError:
            # Keep memory and disk in agreement when the write fails.
            if previous is None:
                del self._user[name]
            else:
                self._user[name] = previous
            raise
        return name

    def delete(self, name: str) -> None:
        if name in BUILTIN_PRESETS:
            raise SettingsError(f"{name!r} is a built-in preset and cannot be deleted")
        if name not in self._user:
            raise SettingsError(f"There is no preset called {name!r}")
        removed = self._user.pop(name)
        try:
            self._write()
        except SettingsError:
            self._user[name] = removed
            raise

    # --- file -----------------------------------------------------------------------------

    @staticmethod
    def _check_name(name: str) -> str:
        name = (name or "").strip()
        if not name:
            raise SettingsError("A preset needs a name")
        if len(name) > _MAX_NAME:
            raise SettingsError(f"A preset name can have at most {_MAX_NAME} characters")
        if any(ch in name for ch in "\r\n\t"):
            raise SettingsError("A preset name must fit on one line")
        clash = next((b for b in BUILTIN_PRESETS if b.casefold() == name.casefold()), None)
        if clash is not None:
            raise SettingsError(f"{clash!r} is a built-in preset and cannot be overwritten; choose another name")
        return name

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(_MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.warnings.append(f"The presets file {self.path} could not be read ({exc.strerror or exc}); "
                                 "only the built-in presets are available.")
            return
        if len(raw) > _MAX_FILE_BYTES:
            self._bad_file("it is far larger than a presets file")
            return
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            self._bad_file("it is not UTF-8 text")
            return
        except (ValueError, RecursionError) as exc:
            self._bad_file(f"it is not valid JSON ({getattr(exc, 'msg', 'nested too deeply')})")
            return
        presets = data.get("presets") if isinstance(data, dict) else None
        if not isinstance(presets, dict):
            self._bad_file('it has no "presets" object')
            return
        skipped = []
        for name, values in presets.items():
            try:
                if not isinstance(values, dict):
                    raise SettingsError("not an object")
                name = self._check_name(name)
                self._user[name] = GenerationSettings.parse(**values)
            except (SettingsError, TypeError) as exc:
                skipped.append(f"{name[:_MAX_NAME]!r} ({exc})")
        if skipped:
            self.warnings.append(f"Skipped {counted(len(skipped), 'preset')} in {self.path}: " + "; ".join(skipped))

    def _bad_file(self, why: str) -> None:
        line = move_aside(self.path, why, "presets file")
        self.warnings.append(f"{line} Only the built-in presets are available.")

    def _write(self) -> None:
        payload = {
            "version": _FORMAT_VERSION,
            "presets": {name: s.model_dump(mode="json") for name, s in sorted(self._user.items())},
        }
        text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, text)
        except OSError as exc:
            raise SettingsError(f"Could not save presets to {self.path}: {exc.strerror or exc}") from None
