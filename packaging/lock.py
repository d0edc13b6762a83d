"""The lock, constraints.txt: the exact version of every package `pip install -e ".[test,bundle]"`
installs, the versions the suite and the bundle are tested with. The README's install commands,
.ci/run and the bundle build install through it (`pip install -c constraints.txt ...`);
pyproject.toml keeps its ranges for people who install into an environment of their own.

    python packaging/lock.py              # after changing pyproject.toml's requirements: resolve again,
                                          # keeping every locked version that still fits
    python packaging/lock.py --upgrade    # the newest versions the ranges allow (then run the suite and
                                          # the bundle: packaging/check_newest.py does both without a lock)

Resolves with pip's own resolver (`pip install --dry-run --ignore-installed --report`), this machine's
pip configuration included, so the lock holds what a fresh `pip install` here takes. It is the
resolution for this platform and Python (written in its header): elsewhere it constrains the
packages both have in common, and a package only another system needs takes its newest version.
torch is locked by its public version only (2.13.0, not 2.13.0+cpu): the build, CPU or CUDA, is the
index's choice (the README's "CPU or GPU"), and a CUDA build installed first is kept.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip carries the same parser
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
PROJECT = "opt-desktop"
EXTRAS = ("test", "bundle")  # what the lock covers: the app, its tests and the bundle build
HASH_PREFIX = "# requirements sha256: "
# Set where an environment was installed without the lock on purpose (packaging/check_newest.py): the
# bundle build and the tests that compare the environment with the lock let it be.
UNLOCKED_ENV = "OPT_DESKTOP_UNLOCKED"
PLATFORM_PREFIX = "# resolved for: "


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """The project's own requirements and those of the locked extras, as pyproject.toml states them."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in EXTRAS:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def requirements_hash(reqs: Iterable[Requirement]) -> str:
    """Changes when a requirement changes, not when a comment or the order does."""
    text = "\n".join(sorted(str(r) for r in reqs))
    return hashlib.sha256(text.encode()).hexdigest()


def platform_line() -> str:
    return f"{sys.platform} {platform.machine()}, CPython {sys.version_info.major}.{sys.version_info.minor}"


def public(version: str) -> str:
    """2.13.0+cpu -> 2.13.0: the version without the build's local label."""
    return Version(version).public


class Lock:
    """constraints.txt read back: pins by canonical name, and the header's facts."""

    def __init__(self, path: Path = LOCK):
        self.path = path
        self.pins: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.requirements_hash = self.platform = ""
        for raw in path.read_text(encoding="utf-8").splitlines():
            if raw.startswith(HASH_PREFIX):
                self.requirements_hash = raw.removeprefix(HASH_PREFIX).strip()
            elif raw.startswith(PLATFORM_PREFIX):
                self.platform = raw.removeprefix(PLATFORM_PREFIX).strip()
            line = raw.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            name, _, version = line.partition("==")
            self.pins[canonicalize_name(name)] = version.strip()
            self.names[canonicalize_name(name)] = name.strip()

    def mismatches(self, installed: dict[str, str]) -> list[str]:
        """One line for each installed package the lock lacks or pins at another version (compared
        by public version: a CUDA build of the locked torch is the locked torch)."""
        out = []
        for name, version in sorted(installed.items()):
            locked = self.pins.get(name)
            if locked is None:
                out.append(f"{name} {version} is not in the lock")
            elif public(version) != public(locked):
                out.append(f"{name} {version} is installed, the lock has {locked}")
        return out


def outside_ranges(pins: dict[str, str], reqs: Iterable[Requirement]) -> list[str]:
    """One line for each requirement the pins (canonical name -> version) lack or break."""
    out = []
    for req in reqs:
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            out.append(f"{req} is not in the lock")
        elif not req.specifier.contains(public(version), prereleases=True):
            out.append(f"the lock's {req.name} {version} breaks {req}")
    return out


def closure(root: str = PROJECT, extras: Iterable[str] = ()) -> dict[str, str]:
    """Every installed distribution `root` (with `extras`) needs here, itself excluded, by canonical
    name -> installed version: its requirements followed through importlib.metadata, markers
    evaluated for this interpreter. A requirement that is not installed is left out (an extra not
    installed here: the test extra without the bundle one, say); `root` must be installed."""
    found: dict[str, str] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    todo = [(root, frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        key = (canonicalize_name(name), wanted)
        if key in done:
            continue
        done.add(key)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            if key[0] == canonicalize_name(root):
                raise
            continue
        if key[0] != canonicalize_name(root):
            found[key[0]] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (*wanted, "")):
                todo.append((req.name, frozenset(req.extras)))
    return found


def resolve(constraints: Path | None) -> dict[str, tuple[str, str]]:
    """What a fresh `pip install ".[test,bundle]"` here would install: canonical name -> (name, version)."""
    with tempfile.TemporaryDirectory(prefix="opt-desktop-lock-") as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                   "--report", str(report), f"{ROOT}[{','.join(EXTRAS)}]"]
        if constraints is not None:
            command += ["--constraint", str(constraints)]
        subprocess.run(command, check=True)
        items = json.loads(report.read_text(encoding="utf-8"))["install"]
    return {canonicalize_name(i["metadata"]["name"]): (i["metadata"]["name"], i["metadata"]["version"])
            for i in items if canonicalize_name(i["metadata"]["name"]) != PROJECT}


def kept_pins(lock: Lock, reqs: list[Requirement]) -> list[str]:
    """The locked versions that still satisfy pyproject.toml's ranges, as constraints for a new resolve."""
    ranges = {canonicalize_name(r.name): r.specifier for r in reqs}
    out = []
    for name, version in lock.pins.items():
        spec = ranges.get(name)
        if spec is None or spec.contains(public(version), prereleases=True):
            out.append(f"{lock.names[name]}=={version}")
    return out


def render(resolved: dict[str, tuple[str, str]], reqs: list[Requirement]) -> str:
    header = [
        "# The lock: every package that `pip install -e \".[test,bundle]\"` installs, at the version the",
        "# suite and the bundle are tested with. Install through it:",
        "#     pip install -c constraints.txt -e \".[test,bundle]\"",
        "# Written by packaging/lock.py from pyproject.toml; do not edit by hand (the README's \"The lock\").",
        "# torch is locked by its public version: the build (CPU or CUDA) is the index's choice.",
        f"{PLATFORM_PREFIX}{platform_line()}",
        f"{HASH_PREFIX}{requirements_hash(reqs)}",
    ]
    lines = [f"{name}=={public(v) if key == 'torch' else v}" for key, (name, v) in sorted(resolved.items())]
    return "\n".join(header + lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upgrade", action="store_true", help="ignore the current lock: the newest versions allowed")
    p.add_argument("--output", type=Path, default=LOCK, help="where to write it (default constraints.txt)")
    args = p.parse_args()
    reqs = requirements()
    old = Lock(LOCK) if LOCK.is_file() and not args.upgrade else None
    with tempfile.TemporaryDirectory(prefix="opt-desktop-lock-") as tmp:
        kept = None
        if old is not None:
            kept = Path(tmp) / "kept.txt"
            kept.write_text("\n".join(kept_pins(old, reqs)) + "\n", encoding="utf-8")
        try:
            resolved = resolve(kept)
        except subprocess.CalledProcessError:
            if kept is None:
                raise
            sys.exit("The locked versions no longer fit together with pyproject.toml: run with --upgrade.")
    before = Lock(args.output).pins if args.output.is_file() else {}
    args.output.write_text(render(resolved, reqs), encoding="utf-8")
    changed = [f"{key} {before.get(key, '-')} -> {v}" for key, (_, v) in sorted(resolved.items())
               if public(v) != public(before.get(key, "0"))]
    gone = sorted(set(before) - set(resolved))
    print(f"wrote {args.output}: {len(resolved)} packages; changed: {', '.join(changed) or 'none'}"
          + (f"; removed: {', '.join(gone)}" if gone else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
