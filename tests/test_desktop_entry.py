"""The launcher, icons and .optsession file type: valid files, and an install that uninstalls cleanly."""

import configparser
import os
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from opt_desktop import desktop_entry
from opt_desktop.desktop_entry import desktop_entry_text, install_linux, linux_targets, uninstall_linux
from opt_desktop.assets import (
    APP_ID,
    ICON_SIZES,
    SESSION_MIME_TYPE,
    desktop_file,
    icon_icns,
    icon_ico,
    icon_png,
    mime_xml,
)
from opt_desktop.session.file import SESSION_SUFFIX

MIME_NS = "{http://www.freedesktop.org/standards/shared-mime-info}"


def read_entry(text: str) -> dict:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(text)
    return dict(parser["Desktop Entry"])


def assert_valid_entry(path: Path) -> None:
    entry = read_entry(path.read_text(encoding="utf-8"))
    assert entry["Type"] == "Application" and entry["Name"] == "OPT Desktop"
    assert entry["Icon"] == APP_ID and entry["Terminal"] == "false"
    assert entry["Exec"].endswith(" %f") and "opt" in entry["Exec"]
    assert SESSION_MIME_TYPE in entry["MimeType"].split(";")
    if shutil.which("desktop-file-validate"):
        out = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True)
        assert out.returncode == 0 and "error" not in out.stdout, out.stdout + out.stderr


def test_the_desktop_file_is_valid():
    assert_valid_entry(desktop_file())
    assert read_entry(desktop_file().read_text())["Exec"] == "opt-desktop %f"
    assert desktop_file().name == f"{APP_ID}.desktop"  # what QGuiApplication.setDesktopFileName names


def test_the_mime_type_maps_optsession_files_to_the_app():
    root = ET.parse(mime_xml()).getroot()
    assert root.tag == f"{MIME_NS}mime-info"
    (mime,) = root.findall(f"{MIME_NS}mime-type")
    assert mime.get("type") == SESSION_MIME_TYPE
    assert [g.get("pattern") for g in mime.findall(f"{MIME_NS}glob")] == ["*" + SESSION_SUFFIX]
    assert mime.find(f"{MIME_NS}comment").text


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_icons_exist_at_every_size():
    for size in ICON_SIZES:
        assert png_size(icon_png(size)) == (size, size)
    assert icon_ico().read_bytes()[:4] == b"\x00\x00\x01\x00"
    assert icon_icns().read_bytes()[:4] == b"icns"


def test_exec_line_quotes_paths_with_spaces(monkeypatch):
    text = desktop_entry_text(["/opt/my apps/bin/opt-desktop"])
    assert read_entry(text)["Exec"] == '"/opt/my apps/bin/opt-desktop" %f'
    text = desktop_entry_text(["/usr/bin/python3", "-m", "opt_desktop"])
    assert read_entry(text)["Exec"] == "/usr/bin/python3 -m opt_desktop %f"


def files_under(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}


def expected_files(data_home: Path) -> set[Path]:
    return {p.relative_to(data_home) for p in linux_targets(data_home)} | {
        Path(APP_ID) / desktop_entry.MANIFEST_NAME}


def test_install_then_uninstall_leaves_nothing_behind(tmp_path):
    home = tmp_path / "share"
    report = install_linux(home, run_tools=False)
    assert files_under(home) == expected_files(home)
    assert {Path("applications/opt-desktop.desktop"), Path("icons/hicolor/48x48/apps/opt-desktop.png"),
            Path("icons/hicolor/512x512/apps/opt-desktop.png"), Path("icons/hicolor/scalable/apps/opt-desktop.svg"),
            Path("mime/packages/opt-desktop.xml")} <= files_under(home)
    assert (home / "icons/hicolor/16x16/apps/opt-desktop.png").read_bytes() == icon_png(16).read_bytes()
    assert "installed" in str(report)
    installed = home / "applications" / "opt-desktop.desktop"
    assert_valid_entry(installed)
    exec_cmd = read_entry(installed.read_text())["Exec"]
    assert exec_cmd.startswith(("/", '"/'))  # an absolute command: a venv's bin/ is not on the desktop's PATH

    uninstall_linux(home, run_tools=False)
    assert list(home.rglob("*")) == []


def test_uninstall_keeps_what_others_installed(tmp_path):
    home = tmp_path / "share"
    other = home / "applications" / "other.desktop"
    other.parent.mkdir(parents=True)
    other.write_text("[Desktop Entry]\n")
    install_linux(home, run_tools=False)
    install_linux(home, run_tools=False)  # twice is the same as once
    assert files_under(home) == expected_files(home) | {Path("applications/other.desktop")}
    uninstall_linux(home, run_tools=False)
    assert files_under(home) == {Path("applications/other.desktop")}
    assert "nothing to remove" in str(uninstall_linux(home, run_tools=False))


@pytest.mark.skipif(shutil.which("update-mime-database") is None, reason="shared-mime-info is not installed")
def test_the_mime_database_learns_and_forgets_the_type(tmp_path):
    home = tmp_path / "share"
    report = install_linux(home)
    assert f"ran update-mime-database {home / 'mime'}" in str(report)
    globs = (home / "mime" / "globs2").read_text()
    assert f"{SESSION_MIME_TYPE}:*{SESSION_SUFFIX}" in globs
    uninstall_linux(home)
    assert list(home.rglob("*")) == []  # the database folder was ours alone


def test_missing_tools_are_skipped_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setattr(desktop_entry.shutil, "which", lambda name: None)
    report = install_linux(tmp_path / "share")
    assert "skipped update-mime-database (not installed)" in str(report)
    assert (tmp_path / "share" / "applications" / "opt-desktop.desktop").is_file()


def test_command_line_installs_and_uninstalls(tmp_path):
    """`opt-desktop --install-desktop-entry` exits after installing, printing what it did; no window."""
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "share")}
    env.pop("DISPLAY", None)
    out = subprocess.run([sys.executable, "-m", "opt_desktop", "--install-desktop-entry"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"installed {tmp_path / 'share' / 'applications' / 'opt-desktop.desktop'}" in out.stdout
    assert (tmp_path / "share" / "mime" / "packages" / "opt-desktop.xml").is_file()
    out = subprocess.run([sys.executable, "-m", "opt_desktop", "--uninstall-desktop-entry"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "removed" in out.stdout
    assert not (tmp_path / "share" / "applications" / "opt-desktop.desktop").exists()


def test_shortcut_without_pyshortcuts_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyshortcuts", None)  # import fails
    with pytest.raises(desktop_entry.DesktopEntryError, match="pip install pyshortcuts"):
        desktop_entry.install_shortcut()


def test_installing_needs_no_qt(tmp_path):
    """The installer runs on machines (and in shells) where Qt cannot start."""
    code = """
import sys
class _NoQt:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('PySide6', 'shiboken6', 'qasync', 'superqt', 'pyqtgraph', 'torch'):
            raise ImportError('not allowed here: ' + name)
sys.meta_path.insert(0, _NoQt())
from opt_desktop.gui.app import main
sys.exit(main(['--install-desktop-entry']))
"""
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "share")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "share" / "applications" / "opt-desktop.desktop").is_file()


def test_a_bundle_points_the_launcher_at_itself(tmp_path, monkeypatch):
    """From the PyInstaller bundle, the menu entry and the file type open the bundle's executable."""
    exe = tmp_path / "OPT Desktop" / "opt-desktop"
    exe.parent.mkdir()
    exe.write_text("")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(exe))
    assert desktop_entry.launch_command() == [str(exe)]
    home = tmp_path / "share"
    install_linux(home, run_tools=False)
    installed = home / "applications" / "opt-desktop.desktop"
    assert_valid_entry(installed)
    entry = read_entry(installed.read_text())
    assert entry["Exec"] == f'"{exe}" %f' and entry["TryExec"] == str(exe)


def test_a_bundle_on_windows_or_macos_says_how_to_pin_it(monkeypatch):
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    with pytest.raises(desktop_entry.DesktopEntryError, match="Applications"):
        desktop_entry.install_shortcut()


def test_the_installer_does_not_import_the_gui():
    """desktop_entry and assets are below the GUI: no import cycle through gui/."""
    code = ("import sys, opt_desktop.desktop_entry, opt_desktop.assets;"
            "print(sorted(m for m in sys.modules if m.startswith('opt_desktop.gui')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
