"""Smoke test of the double-clickable bundle: build it, check that it carries every package's data files
and metadata, load the demo in its window under a virtual X server, generate with it through its CLI,
open the saved session with it, install its launcher.

In the whole suite, which CI runs; `-m "not bundle"` leaves it out. Needs the bundle extra and Debian's
packages that packaging/system_packages.sh installs; without them it is skipped, except under CI
(`CI` set), where that fails. Set OPT_DESKTOP_BUNDLE to an already built "OPT Desktop" folder to test
that one instead of building.
"""

from __future__ import annotations

import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import bundle_prebuild
import pytest
from packaging_helpers import load

pytestmark = [
    pytest.mark.bundle,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the smoke test runs on Linux only"),
]

display = load("display")
build_bundle = load("build_bundle")
contents = load("bundle_contents")


def missing(reason: str) -> None:
    """Skip for lack of a tool, except under CI, which must check the bundle on every submission."""
    if os.environ.get("CI"):
        pytest.fail(f"CI cannot check the bundle: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    if os.environ.get("OPT_DESKTOP_BUNDLE"):
        return Path(os.environ["OPT_DESKTOP_BUNDLE"])
    if importlib.util.find_spec("PyInstaller") is None:
        missing('needs the bundle extra: pip install -c constraints.txt -e ".[test,bundle]"')
    background = bundle_prebuild.started()
    if background is not None:  # started when the tests were collected
        try:
            return background.wait(timeout=3000)
        except RuntimeError as exc:
            pytest.fail(str(exc))
    tmp = tmp_path_factory.mktemp("bundle")
    return build_bundle.build(tmp / "dist", tmp / "work")


@pytest.fixture(scope="module")
def screen():
    if display.missing_tools():
        missing(f"needs {', '.join(display.missing_tools())}: packaging/system_packages.sh installs them")
    with display.virtual_display() as name:
        yield name


@pytest.fixture
def env(tmp_path, screen):
    return build_bundle.check_env(tmp_path, screen)


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


def test_the_bundle_carries_every_packages_data_files_and_metadata(bundle):
    """What transformers 5.25 broke (issue 22): every package the app needs finds its data files and
    every package's version is readable through importlib.metadata, in the bundle as in a venv."""
    internal = bundle / "_internal"
    dists = contents.bundled_distributions()
    assert {"torch", "transformers", "tokenizers", "pyside6-essentials"} <= set(dists)
    absent = [dest for dist in dists.values() for path, dest in contents.data_files(dist)
              if not (internal / dest).is_file() or (internal / dest).stat().st_size != path.stat().st_size]
    assert absent == []
    no_metadata = [name for name, dist in dists.items()
                   if not (internal / contents.metadata_dir(dist).name / "METADATA").is_file()]
    assert no_metadata == []
    if "kernels" in dists:  # the file whose absence stopped every model from loading
        assert (internal / "kernels" / "_internals" / "python_depends.json").is_file()


def test_the_bundled_window_loads_the_demo(bundle, env):
    shown, loaded = build_bundle.check_window(bundle, env)
    print(f"window visible after {shown:.1f} s, the demo loaded after {loaded:.1f} s")


def test_the_bundled_cli_generates_what_the_installed_package_generates(bundle, env):
    assert len(build_bundle.check_cli(bundle, env)) == 8


def test_the_bundled_cli_saves_a_run_and_the_window_opens_it(bundle, env, tmp_path):
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
