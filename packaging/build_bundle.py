"""Build the double-clickable one-folder app with PyInstaller: `python packaging/build_bundle.py`.

Writes dist/OPT Desktop/ (the executable `opt-desktop`, a link `opt-desktop-cli` for the command
line, everything else in _internal/), then prints the bundle's size, what dominates it, and its
start-up time to a visible window under a virtual X server (Xvfb and xdotool; skipped without them).
Needs the bundle extra (`pip install -e ".[bundle]"`) and a CPU build of torch: the bundle carries
no CUDA libraries. See the README's "A bundle to double-click" for Windows and macOS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:  # imported by the tests rather than run
    sys.path.append(str(HERE))

import build_dists  # noqa: E402
import display  # noqa: E402

NAME = "OPT Desktop"
EXECUTABLE = "opt-desktop"
CLI_LINK = "opt-desktop-cli"


def check_torch() -> None:
    import torch

    if torch.version.cuda is not None or getattr(torch.version, "hip", None):
        sys.exit(f"This environment has a GPU build of torch ({torch.__version__}); the bundle is for the CPU "
                 "build. Build it from an environment with the CPU wheel (see the README).")


def build(dist: Path, work: Path) -> Path:
    """PyInstaller on the freshly built wheel's contents; returns the bundle folder."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        sys.exit('PyInstaller is missing: pip install -e ".[bundle]"')
    check_torch()
    work.mkdir(parents=True, exist_ok=True)
    source = work / "wheel-contents"  # a fixed place, so PyInstaller's cache in `work` can serve a rebuild
    shutil.rmtree(source, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="opt-desktop-wheel-") as tmp:
        _, wheel = build_dists.build(Path(tmp))
        with zipfile.ZipFile(wheel) as z:
            z.extractall(source)
    env = {**os.environ, "OPT_DESKTOP_BUNDLE_SOURCE": str(source)}
    subprocess.run([sys.executable, "-m", "PyInstaller", str(HERE / "opt-desktop.spec"), "--noconfirm",
                    "--log-level", "WARN", "--distpath", str(dist), "--workpath", str(work)],
                   env=env, check=True)
    bundle = dist / NAME
    strip_torch(bundle)
    if not sys.platform.startswith("win"):
        link = bundle / CLI_LINK
        link.unlink(missing_ok=True)
        link.symlink_to(EXECUTABLE)  # relative: the folder can move
    return bundle


def strip_torch(bundle: Path) -> None:
    """Linux: drop the symbol tables of torch's own libraries (about 100 MB, mostly libtorch_cpu.so);
    the dynamic symbols that loading needs stay. Only these: other wheels' libraries were patched by
    auditwheel, and stripping those breaks them."""
    if not sys.platform.startswith("linux") or shutil.which("strip") is None:
        return
    libs = [p for pattern in ("libtorch*.so", "libc10*.so", "libshm*.so")
            for p in (bundle / "_internal" / "torch" / "lib").glob(pattern)]
    if libs:
        subprocess.run(["strip", "--strip-unneeded", *map(str, libs)], check=True)


def executable(bundle: Path) -> Path:
    return bundle / (EXECUTABLE + (".exe" if sys.platform.startswith("win") else ""))


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def size_report(bundle: Path, top: int = 12) -> str:
    """The total, then the largest packages/libraries inside _internal/ (what dominates)."""
    total = folder_size(bundle)
    internal = bundle / "_internal"
    parts = []
    for p in internal.iterdir() if internal.is_dir() else []:
        size = folder_size(p) if p.is_dir() else p.stat().st_size
        parts.append((size, p.name + ("/" if p.is_dir() else "")))
    files = sorted(((p.stat().st_size, str(p.relative_to(bundle))) for p in bundle.rglob("*")
                    if p.is_file() and not p.is_symlink()), reverse=True)
    mib = 1 << 20
    lines = [f"bundle size: {total / mib:.0f} MiB in {sum(1 for _ in bundle.rglob('*'))} entries ({bundle})",
             "largest parts:"]
    lines += [f"  {s / mib:8.1f} MiB  {n}" for s, n in sorted(parts, reverse=True)[:top]]
    lines.append("largest files:")
    lines += [f"  {s / mib:8.1f} MiB  {n}" for s, n in files[:top]]
    return "\n".join(lines)


def startup_times(bundle: Path, runs: int = 2) -> list[float]:
    """Seconds from starting the bundle to its window being visible, under Xvfb, `runs` times.

    A private home folder keeps the person's settings and autosaves out of it (and theirs out of
    the measurement); --model demo avoids a download attempt (the window shows before any model
    loads either way)."""
    times = []
    with tempfile.TemporaryDirectory(prefix="opt-desktop-home-") as home, display.virtual_display() as screen:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "OPT_DESKTOP", "QT_"))}
        env.update(DISPLAY=screen, HOME=home, OPT_DESKTOP_HOME=home, QT_QPA_PLATFORM="xcb", HF_HUB_OFFLINE="1")
        for _ in range(runs):
            started = time.monotonic()
            proc = subprocess.Popen([str(executable(bundle)), "--model", "demo"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                _, seconds = display.wait_for_window(screen, proc, started=started)
            except (RuntimeError, TimeoutError) as exc:
                display.stop(proc)
                err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
                raise RuntimeError(f"{exc}\n{err}") from None
            display.stop(proc)
            times.append(seconds)
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dist", type=Path, default=ROOT / "dist", help="where the bundle folder goes (default dist/)")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "bundle", help="PyInstaller's work folder")
    p.add_argument("--measure-only", action="store_true", help="measure an existing bundle, build nothing")
    p.add_argument("--no-startup", action="store_true", help="skip the start-up measurement")
    args = p.parse_args()
    bundle = args.dist.resolve() / NAME
    if not args.measure_only:
        t0 = time.monotonic()
        bundle = build(args.dist.resolve(), args.work.resolve())
        print(f"built {bundle} in {time.monotonic() - t0:.0f} s")
    if not executable(bundle).is_file():
        sys.exit(f"no bundle at {bundle}")
    print(size_report(bundle))
    if args.no_startup:
        return 0
    if not sys.platform.startswith("linux") or display.missing_tools():
        print(f"start-up time: not measured (needs Linux with {', '.join(display.TOOLS)})")
        return 0
    times = startup_times(bundle)
    print("start-up to a visible window: " + ", ".join(f"{t:.1f} s" for t in times)
          + " (first launch, then again with the files in the disk cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
