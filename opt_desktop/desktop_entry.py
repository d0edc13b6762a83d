"""`opt-desktop --install-desktop-entry`: a launcher, icons and the .optsession file type for this user.

Linux follows the freedesktop specs (XDG data folder: applications/, icons/hicolor/, mime/packages/);
Windows gets a Start-menu shortcut and macOS an application bundle through pyshortcuts, when it is
installed. Every file written is recorded in a manifest, so `--uninstall-desktop-entry` removes
exactly those. No Qt: this runs before (and instead of) the window.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import write_atomic, write_text_atomic
from .assets import (
    APP_ID,
    ICON_SIZES,
    desktop_file,
    icon_icns,
    icon_ico,
    icon_path,
    icon_png,
    mime_xml,
)

MANIFEST_NAME = "installed-desktop-entry.json"
SHORTCUT_NAME = "OPT Desktop"


class DesktopEntryError(Exception):
    """Installing or removing the launcher failed; the message says why in one line."""


@dataclass
class Report:
    done: list[str] = field(default_factory=list)  # one line per action, for the terminal

    def add(self, line: str) -> None:
        self.done.append(line)

    def __str__(self) -> str:
        return "\n".join(self.done)


# --- where things go ----------------------------------------------------------------------------

def xdg_data_home() -> Path:
    value = os.environ.get("XDG_DATA_HOME", "").strip()
    # The spec: a relative path is invalid and must be ignored.
    return Path(value) if value and os.path.isabs(value) else Path.home() / ".local" / "share"


def manifest_path(data_home: Path) -> Path:
    return data_home / APP_ID / MANIFEST_NAME


def linux_targets(data_home: Path) -> dict[Path, Path | None]:
    """Installed path -> the resource it is copied from (None: the .desktop file, which is generated)."""
    targets: dict[Path, Path | None] = {data_home / "applications" / f"{APP_ID}.desktop": None}
    for size in ICON_SIZES:
        targets[data_home / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png"] = icon_png(size)
    targets[data_home / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg"] = icon_path()
    targets[data_home / "mime" / "packages" / f"{APP_ID}.xml"] = mime_xml()
    return targets


# --- the command a launcher runs ------------------------------------------------------------------

def frozen() -> bool:
    """Running from the PyInstaller bundle (packaging/build_bundle.py), not from a Python install."""
    return bool(getattr(sys, "frozen", False))


def launch_command() -> list[str]:
    """The bundle's own executable; else the installed `opt-desktop` script beside this Python (a
    virtual environment's bin/ is not on the desktop's PATH), else this Python with `-m opt_desktop`."""
    if frozen():
        return [str(Path(sys.executable).resolve())]
    scripts = Path(sys.executable).parent
    for name in ("opt-desktop", "opt-desktop.exe"):
        if (scripts / name).is_file():
            return [str(scripts / name)]
    found = shutil.which("opt-desktop")
    return [found] if found else [sys.executable, "-m", "opt_desktop"]


def _exec_quote(arg: str) -> str:
    """Quote one Exec argument as the Desktop Entry spec asks (double quotes, escaped specials)."""
    if arg and not any(c in arg for c in ' \t\n"\'\\><~|&;$*?#()`='):
        return arg.replace("%", "%%")
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$")
    return '"' + escaped.replace("%", "%%") + '"'


def desktop_entry_text(command: list[str]) -> str:
    """resources/opt-desktop.desktop with Exec and TryExec pointing at `command`."""
    lines = []
    for line in desktop_file().read_text(encoding="utf-8").splitlines():
        if line.startswith("Exec="):
            line = "Exec=" + " ".join(_exec_quote(a) for a in command) + " %f"
        elif line.startswith("TryExec="):
            line = "TryExec=" + command[0]
        lines.append(line)
    return "\n".join(lines) + "\n"


# --- install / uninstall ----------------------------------------------------------------------------

def _run_tool(report: Report, *args: str) -> None:
    """Refresh a desktop database when the tool exists; a desktop without it re-reads on login."""
    if shutil.which(args[0]) is None:
        report.add(f"skipped {args[0]} (not installed)")
        return
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        report.add(f"{args[0]} failed: {exc}")
        return
    if out.returncode == 0:
        report.add(f"ran {' '.join(args)}")
    else:
        tail = (out.stderr or out.stdout).strip().splitlines()
        report.add(f"{args[0]} failed: {tail[-1] if tail else f'exit status {out.returncode}'}")


def _read_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_manifest(path: Path, files: list[Path], folders: list[Path], data_home: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"data_home": str(data_home), "files": [str(f) for f in files],
                                        "folders": [str(d) for d in folders]}, indent=2))


def _remove(paths: list[Path], folders: list[Path], report: Report) -> None:
    for p in paths:
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)  # a macOS .app bundle
            elif p.exists() or p.is_symlink():
                p.unlink()
            else:
                continue
            report.add(f"removed {p}")
        except OSError as exc:
            report.add(f"could not remove {p}: {exc.strerror or exc}")
    # Folders this app created, deepest first, and only once empty.
    for d in sorted(folders, key=lambda d: len(d.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass


def _make_folders(folder: Path, created: list[Path]) -> None:
    """mkdir -p, noting each folder made so that uninstalling can remove it again once empty."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for d in reversed(missing):
        d.mkdir()
        created.append(d)


def install_linux(data_home: Path | None = None, *, run_tools: bool = True) -> Report:
    data_home = data_home or xdg_data_home()
    report = Report()
    manifest = manifest_path(data_home)
    previous = _read_manifest(manifest)
    files: list[Path] = []
    created: list[Path] = [Path(d) for d in previous.get("folders", [])]
    for target, source in linux_targets(data_home).items():
        try:
            _make_folders(target.parent, created)
            if source is None:
                write_text_atomic(target, desktop_entry_text(launch_command()))
            else:
                data = source.read_bytes()
                write_atomic(target, lambda f: f.write(data))
        except OSError as exc:
            raise DesktopEntryError(f"Cannot write {target}: {exc.strerror or exc}") from None
        files.append(target)
        report.add(f"installed {target}")
    _make_folders(manifest.parent, created)
    stale = [Path(f) for f in previous.get("files", []) if Path(f) not in files]
    _remove(stale, [], report)
    _write_manifest(manifest, files, sorted(set(created)), data_home)
    report.add(f"recorded what was installed in {manifest}")
    if run_tools:
        _run_tool(report, "update-mime-database", str(data_home / "mime"))
        _run_tool(report, "update-desktop-database", str(data_home / "applications"))
    return report


def uninstall_linux(data_home: Path | None = None, *, run_tools: bool = True) -> Report:
    data_home = data_home or xdg_data_home()
    report = Report()
    manifest = manifest_path(data_home)
    data = _read_manifest(manifest)
    if not data:
        report.add(f"nothing to remove: no record of an installation in {manifest.parent}")
        return report
    folders = [Path(d) for d in data.get("folders", [])]
    _remove([Path(f) for f in data.get("files", [])] + [manifest], [], report)
    mime, apps = data_home / "mime", data_home / "applications"
    if run_tools:
        if (mime / "packages").is_dir():
            _run_tool(report, "update-mime-database", str(mime))
        if apps.is_dir():
            _run_tool(report, "update-desktop-database", str(apps))
    # A database folder this app created and nothing else uses holds only what the tools generated
    # from our files: it goes too.
    if mime in folders and not any((mime / "packages").glob("*.xml")):
        shutil.rmtree(mime, ignore_errors=True)
    if apps in folders and not any(apps.glob("*.desktop")):
        (apps / "mimeinfo.cache").unlink(missing_ok=True)
    _remove([], folders, report)
    return report


def _pyshortcuts():
    try:
        import pyshortcuts
    except ImportError:
        raise DesktopEntryError(
            "Creating a launcher on this system needs pyshortcuts: pip install pyshortcuts, then run this again."
        ) from None
    return pyshortcuts


def _other_manifest() -> Path:
    from . import folders

    return folders.data_dir() / MANIFEST_NAME


def install_shortcut() -> Report:
    """Windows: a Start-menu shortcut. macOS: an application bundle in /Applications (else on the Desktop)."""
    if frozen():
        # pyshortcuts runs a Python script; a bundle is launched as the platform expects instead.
        raise DesktopEntryError(
            "This bundle needs no installing: on macOS move OPT Desktop.app to Applications, on Windows "
            "right-click opt-desktop.exe and choose Pin to Start."
        )
    ps = _pyshortcuts()
    report = Report()
    windows = sys.platform.startswith("win")
    icon = icon_ico() if windows else icon_icns()
    # "_" is pyshortcuts' name for this Python: the launcher runs `python -m opt_desktop`.
    common = dict(name=SHORTCUT_NAME, description="Run OPT language models and watch their internals",
                  icon=str(icon), terminal=False)
    if windows:
        scut = ps.make_shortcut("_ -m opt_desktop", desktop=False, startmenu=True, **common)
        made = [Path(scut.startmenu_dir) / scut.target]
    else:
        try:
            scut = ps.make_shortcut("_ -m opt_desktop", desktop=False, macos_app=True, **common)
            made = [Path("/Applications") / scut.target]
        except OSError:
            scut = ps.make_shortcut("_ -m opt_desktop", desktop=True, **common)
            made = [Path(scut.desktop_dir) / scut.target]
    for p in made:
        report.add(f"installed {p}")
    manifest = _other_manifest()
    _write_manifest(manifest, made, [], manifest.parent)
    report.add(f"recorded what was installed in {manifest}")
    return report


def uninstall_shortcut() -> Report:
    report = Report()
    manifest = _other_manifest()
    data = _read_manifest(manifest)
    if not data:
        report.add(f"nothing to remove: no record of an installation in {manifest.parent}")
        return report
    _remove([Path(f) for f in data.get("files", [])] + [manifest], [], report)
    return report


def install(data_home: Path | None = None) -> Report:
    """Install for the current user on this platform."""
    if sys.platform.startswith("linux") or data_home is not None:
        return install_linux(data_home)
    return install_shortcut()


def uninstall(data_home: Path | None = None) -> Report:
    if sys.platform.startswith("linux") or data_home is not None:
        return uninstall_linux(data_home)
    return uninstall_shortcut()
