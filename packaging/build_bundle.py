"""Build the double-clickable one-folder app with PyInstaller: `python packaging/build_bundle.py`.

Writes dist/OPT Desktop/ (the executable `opt-desktop`, a link `opt-desktop-cli` for the command
line, everything else in _internal/), prints the bundle's size and what dominates it, then checks
it: the bundled CLI must load the demo model and generate the same tokens as this environment's
opt-desktop-cli, and the bundled window must load the demo (under a virtual X server: Debian's xvfb
and xdotool). A bundle that fails a check fails the build. Last, its start-up time to a visible
window. Needs the bundle extra installed through the lock (`pip install -c constraints.txt -e
".[bundle]"`; set OPT_DESKTOP_UNLOCKED=1 to build from other versions on purpose) and a CPU build of
torch: the bundle carries no CUDA libraries. See the README's "Without Python: the bundle".
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
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:  # imported by the tests rather than run
    sys.path.append(str(HERE))

import build_dists  # noqa: E402
import display  # noqa: E402
import lock  # noqa: E402

NAME = "OPT Desktop"
EXECUTABLE = "opt-desktop"
CLI_LINK = "opt-desktop-cli"


def check_torch() -> None:
    import torch

    if torch.version.cuda is not None or getattr(torch.version, "hip", None):
        sys.exit(f"This environment has a GPU build of torch ({torch.__version__}); the bundle is for the CPU "
                 "build. Build it from an environment with the CPU wheel (see the README).")


def check_lock() -> None:
    """The bundle is made of the locked versions (constraints.txt), the ones the suite tested, so a
    fresh clone gives the same bundle; OPT_DESKTOP_UNLOCKED=1 (packaging/check_newest.py) allows others."""
    if os.environ.get(lock.UNLOCKED_ENV):
        print(f"{lock.UNLOCKED_ENV} is set: building from this environment's versions, not the lock's")
        return
    installed = {**lock.closure(), **lock.closure("pyinstaller")}  # the app's packages and the builder's
    problems = lock.Lock().mismatches(installed)
    if problems:
        sys.exit("This environment is not the locked one:\n  " + "\n  ".join(problems)
                 + '\nInstall through the lock: pip install -c constraints.txt -e ".[bundle]"')


def build(dist: Path, work: Path) -> Path:
    """PyInstaller on the freshly built wheel's contents; returns the bundle folder."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        sys.exit('PyInstaller is missing: pip install -c constraints.txt -e ".[bundle]"')
    check_torch()
    check_lock()
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


class CheckFailed(Exception):
    """The built bundle does not do what a person would do with it first."""


def check_env(home: Path, screen: str | None = None) -> dict[str, str]:
    """The environment a check runs the bundle in: a private home, so the person's settings and
    autosaves stay out of it (and theirs out of the check); offline, as on a first start without network."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QT_", "OPT_DESKTOP", "XDG_"))}
    env.update(HOME=str(home), OPT_DESKTOP_HOME=str(home / "app"), HF_HUB_OFFLINE="1")
    if screen is not None:
        env.update(DISPLAY=screen, QT_QPA_PLATFORM="xcb")
    return env


# Greedy, so the bundle and the installed package must agree token for token.
DEMO_RUN = ("generate", "--model", "demo", "--prompt", "def add(a, b):", "--max-new-tokens", "8", "--greedy",
            "--json")


def generated_ids(command: list[str], env: dict[str, str]) -> list[int]:
    """The token ids `command` (an opt-desktop-cli) generates with the demo model."""
    out = subprocess.run([*command, *DEMO_RUN], env=env, cwd=env["HOME"], capture_output=True, text=True,
                         timeout=600)
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    finished = [e for e in events if e.get("event") == "Finished"]
    if out.returncode != 0 or not finished:
        raise CheckFailed(f"{' '.join(command)} could not generate with the demo (exit status {out.returncode}):\n"
                          f"{out.stderr[-3000:]}")
    return finished[-1]["token_ids"]


def check_cli(bundle: Path, env: dict[str, str]) -> list[int]:
    """The bundled CLI loads the demo and generates what this environment's opt-desktop-cli generates."""
    bundled = generated_ids([str(cli_path(bundle))], env)
    expected = generated_ids([sys.executable, "-m", "opt_desktop.cli"], env)
    if not bundled or bundled != expected:
        raise CheckFailed(f"the bundled CLI generated {bundled}, the installed package {expected}")
    return bundled


def cli_path(bundle: Path) -> Path:
    return bundle / (CLI_LINK + ".exe") if sys.platform.startswith("win") else bundle / CLI_LINK


def check_window(bundle: Path, env: dict[str, str], timeout: float = 300.0) -> tuple[float, float]:
    """Start the bundled window with `--model demo` on env's DISPLAY and wait until its title names
    the loaded demo model; (seconds to a visible window, seconds to the demo loaded)."""
    from opt_desktop.engine.loading.demo import DEMO_LABEL

    output = Path(env["HOME"]) / "window-output.txt"
    started = time.monotonic()
    with output.open("wb") as out:
        proc = subprocess.Popen([str(executable(bundle)), "--model", "demo"], env=env, cwd=env["HOME"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        _, shown = display.wait_for_window(env["DISPLAY"], proc, timeout=timeout, started=started)
        try:
            _, loaded = display.wait_for_window(env["DISPLAY"], proc, timeout=timeout, title_has=DEMO_LABEL,
                                                started=started)
        except TimeoutError:
            raise TimeoutError(f"its title did not name the demo within {timeout:.0f} s") from None
    except (RuntimeError, TimeoutError) as exc:
        title = ", ".join(display.window_name(env["DISPLAY"], w) for w in display.visible_windows(env["DISPLAY"],
                                                                                                  proc.pid))
        display.stop(proc)
        raise CheckFailed(f"the bundled window did not load the demo: {exc}; its title: {title or '-'}\n"
                          f"{output.read_text(errors='replace')[-3000:]}{log_tail(Path(env['OPT_DESKTOP_HOME']))}"
                          ) from None
    display.stop(proc)
    return shown, loaded


def log_tail(home: Path, chars: int = 3000) -> str:
    """The end of every log the app wrote under `home` (the window's and the engine's)."""
    return "".join(f"\n--- {p}\n{p.read_text(errors='replace')[-chars:]}" for p in sorted(home.rglob("*.log")))


def check(bundle: Path) -> None:
    """What a person does first, in the bundle as built: generate with the demo from the CLI, and open
    the window on the demo. Raises CheckFailed."""
    with tempfile.TemporaryDirectory(prefix="opt-desktop-check-") as home:
        ids = check_cli(bundle, check_env(Path(home) / "cli"))
        print(f"the bundled CLI loads the demo and generates the installed package's tokens: {ids}")
        if not sys.platform.startswith("linux"):
            print("the bundled window: not checked (the check runs on Linux, under Xvfb)")
            return
        if display.missing_tools():
            raise CheckFailed(f"checking the bundled window needs {', '.join(display.missing_tools())}: "
                              "apt-get install xvfb xdotool (the README's list), or pass --no-check")
        with display.virtual_display() as screen:
            shown, loaded = check_window(bundle, check_env(Path(home) / "window", screen))
        print(f"the bundled window loads the demo: visible after {shown:.1f} s, demo loaded after {loaded:.1f} s")


def startup_times(bundle: Path, runs: int = 2) -> list[float]:
    """Seconds from starting the bundle to its window being visible, under Xvfb, `runs` times.

    --model demo avoids a download attempt (the window shows before any model loads either way)."""
    times = []
    with tempfile.TemporaryDirectory(prefix="opt-desktop-home-") as home, display.virtual_display() as screen:
        env = check_env(Path(home), screen)
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
    p.add_argument("--measure-only", action="store_true", help="check and measure an existing bundle, build nothing")
    p.add_argument("--no-check", action="store_true", help="skip checking that the bundle loads the demo")
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
    if not args.no_check:
        try:
            check(bundle)
        except CheckFailed as exc:
            sys.exit(f"The bundle is broken: {exc}")
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
