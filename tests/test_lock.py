"""The lock (constraints.txt, written by packaging/lock.py) and the torch pin: a fresh install through
the lock gives the versions the suite tested, and the README and pyproject.toml say truthfully which
build of torch pip takes."""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
import urllib.request

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging_helpers import ROOT, load

lock = load("lock")

README = (ROOT / "README.md").read_text(encoding="utf-8")
PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def torch_pin() -> str:
    (req,) = [r for r in lock.requirements() if canonicalize_name(r.name) == "torch"]
    (spec,) = req.specifier
    assert spec.operator == "==", "torch is pinned to one release (the README's 'CPU or GPU')"
    return spec.version


def test_the_lock_was_written_from_this_pyproject():
    assert lock.Lock().requirements_hash == lock.requirements_hash(lock.requirements()), (
        "pyproject.toml's requirements changed since the lock was written: run python packaging/lock.py")


def test_the_lock_pins_one_version_of_each_package():
    lines = [line for line in lock.LOCK.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!]+", line) for line in lines), lines
    names = [canonicalize_name(line.split("==")[0]) for line in lines]
    assert len(names) == len(set(names))


def test_every_requirement_is_locked_within_its_range():
    assert lock.outside_ranges(lock.Lock().pins, lock.requirements()) == []


def test_a_lock_that_breaks_a_range_or_lacks_a_requirement_is_caught():
    pins = {**lock.Lock().pins, "numpy": "1.25.2"}  # pyproject asks for numpy>=1.26
    del pins["qasync"]
    assert lock.outside_ranges(pins, lock.requirements()) == [
        "the lock's numpy 1.25.2 breaks numpy>=1.26", "qasync>=0.27 is not in the lock"]


@pytest.mark.skipif(bool(os.environ.get(lock.UNLOCKED_ENV)), reason="installed without the lock on purpose")
def test_this_environment_is_the_locked_one():
    """Every package the app, its tests and the bundle need here is installed at the locked version,
    and the lock holds nothing else. A CUDA build of the locked torch counts as the locked torch."""
    locked = lock.Lock()
    if locked.platform != lock.platform_line():
        pytest.skip(f"the lock is {locked.platform}'s resolution; this is {lock.platform_line()}")
    installed = lock.closure(extras=lock.EXTRAS)
    assert locked.mismatches(installed) == [], "install through the lock: pip install -c constraints.txt ..."
    if "pyinstaller" in installed:  # every locked extra is installed: nothing in the lock may be stale
        assert sorted(set(locked.pins) - set(installed)) == []


def test_the_environment_check_names_a_drifted_package():
    locked = lock.Lock()
    drifted = {"numpy": "0.1", "torch": f"{locked.pins['torch']}+cu128", "not-locked": "1.0"}
    assert locked.mismatches(drifted) == [
        "not-locked 1.0 is not in the lock", f"numpy 0.1 is installed, the lock has {locked.pins['numpy']}"]


def test_the_readme_pyproject_and_lock_name_the_same_torch():
    pin = torch_pin()
    assert lock.public(lock.Lock().pins["torch"]) == pin
    mentioned = re.findall(r"torch==([0-9][\w.+]*)", README)
    assert mentioned and set(mentioned) == {pin}, mentioned
    assert f"`torch` is pinned to `{pin}`" in README


BUILD_CLAIM = re.compile(r"PyPI's Linux x86_64 wheel of torch ([0-9.]+) is (?:a|the) (CUDA|CPU) build")


def pypi_linux_build(version: str) -> str:
    """'CUDA' or 'CPU': what PyPI's Linux x86_64 wheel of torch `version` for this Python is, read from
    the wheel's own metadata (PEP 658): a CUDA build requires NVIDIA's CUDA packages on Linux."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    try:
        index = urllib.request.Request("https://pypi.org/simple/torch/",
                                       headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(index, timeout=30) as r:
            files = json.load(r)["files"]
        name = rf"torch-{re.escape(version)}-{tag}-{tag}-manylinux\w*_x86_64\.whl"
        (wheel,) = [f for f in files if re.fullmatch(name, f["filename"])]
        with urllib.request.urlopen(wheel["url"] + ".metadata", timeout=30) as r:
            metadata = r.read().decode()
    except (OSError, ValueError) as exc:  # no network, no such file, no metadata served for it
        pytest.skip(f"PyPI's metadata of torch {version} could not be read: {exc}")
    needs = [Requirement(line.removeprefix("Requires-Dist:").strip()) for line in metadata.splitlines()
             if line.startswith("Requires-Dist:")]
    linux = {"platform_system": "Linux", "sys_platform": "linux", "extra": ""}
    cuda = [r.name for r in needs
            if re.match(r"(nvidia-|cuda-)", r.name) and (r.marker is None or r.marker.evaluate(linux))]
    return "CUDA" if cuda else "CPU"


def test_the_readme_and_pyproject_say_which_torch_build_pypi_gives_linux():
    claims = BUILD_CLAIM.findall(README) + BUILD_CLAIM.findall(PYPROJECT)
    assert BUILD_CLAIM.search(README) and BUILD_CLAIM.search(PYPROJECT), "both say which build PyPI's wheel is"
    pin = torch_pin()
    actual = pypi_linux_build(pin)
    assert set(claims) == {(pin, actual)}, f"PyPI's Linux x86_64 torch {pin} is a {actual} build; they say {claims}"
