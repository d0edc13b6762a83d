"""Build the sdist, then the wheel from that sdist, as a release would: `python packaging/build_dists.py [OUT]`.

Building from the sdist checks that it is complete; building in a temporary copy keeps stale files
in a checkout's build/ out of the wheel. Uses this environment's setuptools, so nothing is
downloaded. Prints the two files' paths.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What a checkout holds beside the sources: environments, build output, caches.
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv*", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache", "*.pyc")


def _build(hook: str, source: Path, out: Path) -> Path:
    code = f"import sys, setuptools.build_meta as b; print(b.{hook}(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=source, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{hook} failed:\n{done.stdout}\n{done.stderr}")
    return out / done.stdout.strip().splitlines()[-1]


def build(out: Path) -> tuple[Path, Path]:
    """(sdist, wheel), both written to `out`."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="opt-desktop-build-") as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(ROOT, copy, ignore=_NOT_SOURCE)
        sdist = _build("build_sdist", copy, out)
        with tarfile.open(sdist) as tar:
            tar.extractall(Path(tmp) / "sdist", filter="data")
        (unpacked,) = (Path(tmp) / "sdist").iterdir()
        wheel = _build("build_wheel", unpacked, out)
    return sdist, wheel


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist"
    for path in build(out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
