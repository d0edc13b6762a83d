"""The bundle's one executable dispatches to the window or the CLI (opt_desktop/launcher.py)."""

import subprocess
import sys

import pytest

from opt_desktop import launcher


@pytest.mark.parametrize(("argv0", "args", "cli"), [
    ("/opt/OPT Desktop/opt-desktop", ["--cli", "generate"], True),
    ("/opt/OPT Desktop/opt-desktop-cli", ["generate"], True),
    ("C:/OPT Desktop/opt-desktop-cli.exe", ["info"], True),
    ("/opt/OPT Desktop/opt-desktop", ["run.optsession"], False),
    ("/opt/OPT Desktop/opt-desktop", [], False),
    ("/opt/OPT Desktop/opt-desktop", ["run.optsession", "--cli"], False),  # only as the first argument
])
def test_cli_by_flag_or_by_name(argv0, args, cli):
    assert launcher.wants_cli(argv0, args) is cli


def test_cli_flag_runs_the_cli_without_qt(tmp_path):
    """`opt-desktop --cli ...` reaches opt-desktop-cli's parser and never imports the GUI."""
    code = """
import sys
from opt_desktop import launcher
try:
    launcher.main(['--cli', 'info', '--help'])
except SystemExit:
    pass
print('GUI' if any(m.startswith(('opt_desktop.gui', 'PySide6')) for m in sys.modules) else 'no GUI')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "usage: opt-desktop-cli info" in out.stdout
    assert out.stdout.strip().endswith("no GUI")


def test_other_arguments_reach_the_window(monkeypatch):
    seen = []
    monkeypatch.setattr("opt_desktop.gui.app.main", lambda argv: seen.append(argv) or 0)
    monkeypatch.setattr(sys, "argv", ["opt-desktop", "x.optsession"])
    assert launcher.main() == 0
    assert seen == [["x.optsession"]]
