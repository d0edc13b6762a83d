"""Smoke test of the double-clickable bundle: build it, start it under a virtual X server, generate with
the demo through its CLI, open the saved session with it, install its launcher.

Not in the default run (it builds for minutes):
    apt-get install -y xvfb xdotool imagemagick libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 desktop-file-utils
    .venv/bin/pip install -e ".[test,bundle]" && .venv/bin/python -m pytest -m bundle tests/test_bundle.py
Set OPT_DESKTOP_BUNDLE to an already built "OPT Desktop" folder to test that one instead of building.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging_helpers import load

pytestmark = [
    pytest.mark.bundle,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the smoke test runs on Linux only"),
]

display = load("display")
build_bundle = load("build_bundle")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    if os.environ.get("OPT_DESKTOP_BUNDLE"):
        return Path(os.environ["OPT_DESKTOP_BUNDLE"])
    pytest.importorskip("PyInstaller", reason='needs the bundle extra: pip install -e ".[bundle]"')
    tmp = tmp_path_factory.mktemp("bundle")
    return build_bundle.build(tmp / "dist", tmp / "work")


@pytest.fixture(scope="module")
def screen():
    if display.missing_tools():
        pytest.skip(f"needs {', '.join(display.missing_tools())} (apt-get install xvfb xdotool)")
    with display.virtual_display() as name:
        yield name


@pytest.fixture
def env(tmp_path, screen):
    # A private home: the person's settings and autosaves stay out of the test, and the test's out of theirs.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QT_", "OPT_DESKTOP", "XDG_"))}
    return {**clean, "DISPLAY": screen, "QT_QPA_PLATFORM": "xcb", "HF_HUB_OFFLINE": "1",
            "OPT_DESKTOP_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}


def start(bundle: Path, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(build_bundle.executable(bundle)), *args], env=env, cwd=env["HOME"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def show_window(bundle: Path, env: dict, *args: str, title_has: str = "") -> str:
    """Start the bundle, wait for its window, take a screenshot, close it; the window's title."""
    proc = start(bundle, env, *args)
    try:
        window, seconds = display.wait_for_window(env["DISPLAY"], proc, timeout=180, title_has=title_has)
        time.sleep(3.0)  # let it draw, for the screenshot (window.png in the test's folder)
        display.screenshot(env["DISPLAY"], str(Path(env["HOME"]) / "window.png"))
        return display.window_name(env["DISPLAY"], window)
    except (RuntimeError, TimeoutError) as exc:
        display.stop(proc)
        pytest.fail(f"{exc}\n{proc.stdout.read().decode(errors='replace')[-3000:]}")
    finally:
        display.stop(proc)


def cli(bundle: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(bundle / build_bundle.CLI_LINK), *args], env=env, cwd=env["HOME"],
                          capture_output=True, text=True, timeout=300)


def test_the_bundle_is_lean(bundle):
    names = [p.name for p in bundle.rglob("*")]
    # CUDA's libraries (libcudart, libcublas, libcudnn, libnvrtc, ...) and the nvidia-* packages' folder.
    assert not [n for n in names if n.startswith(("libcu", "libnv", "libnccl")) or n == "nvidia"]
    assert (bundle / "_internal" / "torch" / "bin" / "torch_shm_manager").is_file()  # torch refuses to import without
    assert not (bundle / "_internal" / "torch" / "include").exists()
    assert not list((bundle / "_internal" / "torch" / "bin").glob("test_*"))  # torch's C++ test programs
    assert not list(bundle.rglob("conftest.py")) and not list(bundle.rglob("test_wheel.py"))  # no test suites
    assert (bundle / "_internal" / "opt_desktop" / "resources" / "icons" / "opt-desktop-48.png").is_file()


def test_the_bundle_shows_its_window(bundle, env):
    title = show_window(bundle, env, "--model", "demo")
    assert "OPT Desktop" in title


def test_the_bundled_cli_generates_and_the_window_opens_its_session(bundle, env, tmp_path):
    saved = tmp_path / "hello.optsession"
    out = cli(bundle, env, "generate", "--model", "demo", "--prompt", "Hello", "--max-new-tokens", "8",
              "--seed", "1", "--save", str(saved))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() and saved.is_file()
    # The same through the flag, for platforms without the link.
    flag = subprocess.run([str(build_bundle.executable(bundle)), "--cli", "show", str(saved)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert flag.returncode == 0 and "Hello" in flag.stdout, flag.stderr
    # The window's title names the session it opened.
    assert "hello" in show_window(bundle, env, str(saved), title_has="hello")


def test_the_bundles_launcher_opens_the_bundle(bundle, env, tmp_path):
    share = tmp_path / "share"
    out = subprocess.run([str(build_bundle.executable(bundle)), "--install-desktop-entry"],
                         env={**env, "XDG_DATA_HOME": str(share)}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    entry_file = share / "applications" / "opt-desktop.desktop"
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(entry_file.read_text(encoding="utf-8"))
    exe = build_bundle.executable(bundle).resolve()
    assert parser["Desktop Entry"]["TryExec"] == str(exe)
    assert parser["Desktop Entry"]["Exec"] in (f"{exe} %f", f'"{exe}" %f')
    assert (share / "icons" / "hicolor" / "256x256" / "apps" / "opt-desktop.png").is_file()
    assert (share / "mime" / "packages" / "opt-desktop.xml").is_file()
    if shutil.which("desktop-file-validate"):
        check = subprocess.run(["desktop-file-validate", str(entry_file)], capture_output=True, text=True)
        assert check.returncode == 0 and "error" not in check.stdout, check.stdout
