"""The wheel, installed the way a user installs it (not editable), carries everything the app reads at
run time: the launcher and file type install from it, and the demo model runs from it."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging_helpers import ROOT, load

from opt_desktop.assets import APP_ID, SESSION_MIME_TYPE
from opt_desktop.desktop_entry import MANIFEST_NAME, linux_targets

# In resources/ for the README or the repository only; everything else there ships.
NOT_SHIPPED = {"screenshot.png"}


def source_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    return load("build_dists").build(tmp_path_factory.mktemp("dists"))


@pytest.fixture(scope="module")
def installed(dists, tmp_path_factory):
    """A fresh environment with the wheel installed non-editable, reusing this one's dependencies."""
    venv = tmp_path_factory.mktemp("env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # This environment's packages come after the new one's own; its .pth files (the editable
    # install's finder among them) are not run from there, so opt_desktop comes only from the wheel.
    import sysconfig

    (site / "reuse-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    # --ignore-installed: the editable opt-desktop visible through that path is another environment's.
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                          "--no-index", "--ignore-installed", "--no-compile", "-q", str(dists[1])],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return venv


def run(venv: Path, tool: str, *args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(bindir / tool), *args], env={**clean, **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=240)


def test_the_wheel_holds_every_module_and_every_shipped_file(dists):
    sdist, wheel = dists
    names = set(zipfile.ZipFile(wheel).namelist())
    code = {f"opt_desktop/{f}" for f in source_files(ROOT / "opt_desktop") if f.endswith(".py")}
    shipped = {f"opt_desktop/resources/{f}" for f in source_files(ROOT / "resources") if f not in NOT_SHIPPED}
    assert code - names == set(), "modules missing from the wheel"
    assert shipped - names == set(), "resources missing from the wheel"
    assert {"opt_desktop/resources/icons/opt-desktop-48.png", "opt_desktop/resources/opt-desktop.desktop",
            "opt_desktop/resources/opt-desktop-mime.xml"} <= names
    # Nothing else: no tests, no build scripts, no screenshot.
    info = {n for n in names if n.split("/")[0].endswith(".dist-info")}
    assert names - info == code | shipped
    with tarfile.open(sdist) as tar:
        in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"setup.py", "pyproject.toml", "constraints.txt", "resources/opt-desktop.desktop",
            "tests/conftest.py"} <= in_sdist


def test_installed_wheel_runs_from_its_own_files(installed, tmp_path):
    out = run(installed, "python", "-c",
              "import opt_desktop, opt_desktop.assets as a; print(opt_desktop.__file__); print(a.resource())",
              env={}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    package, resources = (Path(line) for line in out.stdout.split())
    assert package.is_relative_to(installed) and resources.is_relative_to(installed)
    assert resources == package.parent / "resources"


def test_installed_wheel_installs_the_desktop_entry(installed, tmp_path):
    share = tmp_path / "share"
    env = {"XDG_DATA_HOME": str(share), "XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}
    env_no_display = {**env, "DISPLAY": "", "WAYLAND_DISPLAY": ""}
    out = run(installed, "opt-desktop", "--install-desktop-entry", env=env_no_display, cwd=tmp_path)
    assert out.returncode == 0, out.stderr

    expected = set(linux_targets(share)) | {share / APP_ID / MANIFEST_NAME}
    missing = [p for p in expected if not p.is_file()]
    assert missing == []
    assert all(p.stat().st_size > 0 for p in expected)
    icon = share / "icons" / "hicolor" / "48x48" / "apps" / f"{APP_ID}.png"
    assert icon.read_bytes() == (ROOT / "resources" / "icons" / f"{APP_ID}-48.png").read_bytes()

    entry_file = share / "applications" / f"{APP_ID}.desktop"
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(entry_file.read_text(encoding="utf-8"))
    entry = parser["Desktop Entry"]
    bindir = installed / ("Scripts" if os.name == "nt" else "bin")
    assert entry["Exec"] == f"{bindir / 'opt-desktop'} %f"  # the wheel's own launcher, by absolute path
    assert SESSION_MIME_TYPE in entry["MimeType"]
    if shutil.which("desktop-file-validate"):
        check = subprocess.run(["desktop-file-validate", str(entry_file)], capture_output=True, text=True)
        assert check.returncode == 0 and "error" not in check.stdout, check.stdout + check.stderr


def test_installed_wheel_generates_with_the_demo_model(installed, tmp_path):
    env = {"OPT_DESKTOP_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    saved = tmp_path / "run.optsession"
    out = run(installed, "opt-desktop-cli", "generate", "--model", "demo", "--prompt", "Hello",
              "--max-new-tokens", "6", "--seed", "1", "--save", str(saved), env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip(), "no text was generated"
    shown = run(installed, "opt-desktop-cli", "show", str(saved), env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "Hello" in shown.stdout
