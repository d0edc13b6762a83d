"""Install this checkout without the lock, the way someone installing into an environment of their own
gets it (the newest versions pyproject.toml's ranges allow), and run the whole suite there, the bundle
build and its smoke test included, so the next incompatible release is found here before a user
finds it.

    python packaging/check_newest.py            # a fresh environment in a temporary folder
    python packaging/check_newest.py --keep     # in build/newest-venv, kept for a look afterwards
    python packaging/check_newest.py -- -x tests/test_bundle.py   # pytest's arguments after --

Prints where the versions differ from the lock, then pytest's result; exits with pytest's status.
Needs what the suite needs (the README's "Develop", the system packages of the bundle's smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))

import lock  # noqa: E402


def install(venv: Path) -> Path:
    """A fresh virtual environment with the checkout installed editable, without the lock; its python."""
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[{','.join(lock.EXTRAS)}]"],
                   check=True)
    return python


def installed_versions(python: Path) -> dict[str, str]:
    """What the app, its tests and the bundle build use in that environment (lock.closure, run there)."""
    code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import lock; "
            f"print(json.dumps(lock.closure(extras={lock.EXTRAS!r})))")
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def differences(locked: dict[str, str], newest: dict[str, str]) -> list[str]:
    lines = []
    for name in sorted(set(locked) | set(newest)):
        old, new = locked.get(name), newest.get(name)
        if old is None:
            lines.append(f"{name}: not in the lock, {new} here")
        elif new is None:
            lines.append(f"{name}: {old} in the lock, not needed here any more")
        elif lock.public(old) != lock.public(new):
            lines.append(f"{name}: {old} in the lock, {new} here")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", action="store_true", help="use build/newest-venv and keep it")
    p.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="opt-desktop-newest-") as tmp:
        venv = ROOT / "build" / "newest-venv" if args.keep else Path(tmp) / "venv"
        t0 = time.monotonic()
        python = install(venv)
        print(f"installed without the lock into {venv} in {time.monotonic() - t0:.0f} s")
        changed = differences(lock.Lock().pins, installed_versions(python))
        print("versions that differ from the lock:" + ("".join(f"\n  {line}" for line in changed) or " none"))
        env = {**os.environ, lock.UNLOCKED_ENV: "1"}
        t0 = time.monotonic()
        status = subprocess.run([str(python), "-m", "pytest", *args.pytest_args], cwd=ROOT, env=env).returncode
        print(f"the suite with the newest versions: {'passed' if status == 0 else f'FAILED (pytest status {status})'}"
              f" in {time.monotonic() - t0:.0f} s; versions that differ from the lock: {len(changed)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
