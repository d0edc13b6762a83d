"""How late a GUI-thread timer fires in each phase of using the window: p99 and maximum delay.

Runs the real main window (offscreen unless a display is set) on a qasync loop, with its engine in
a child process as `opt-desktop` runs it (or `--engine thread`, on a thread of this process). A
10 ms QTimer records how much later than due each tick arrives; the window idle is the baseline.
Phases, each printed with its p99 and max lateness:

  1. the first load, including torch's import and the tokenizer's build;
  2. generating with the Output tab visible;
  3. generating with the Inspector tab visible, including its first redraw;
  4. saving a session with full attention rows, the autosave, opening that session, HTML export.

The model is a random-weight opt-125m (the real config; built in a child process so this one never
imports torch), or `--model demo`.

    python benchmarks/gui_responsiveness.py [--model opt-125m] [--tokens 200] [--engine process]

Target (issue 15): p99 under 16 ms and max under 50 ms in every phase.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import qasync  # noqa: E402
from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

TICK_MS = 10
HERE = Path(__file__).resolve().parent


class LatenessProbe:
    def __init__(self):
        self.delays: list[float] = []
        self._last = None
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)

    def _tick(self):
        now = time.perf_counter()
        if self._last is not None:
            self.delays.append(max(0.0, (now - self._last) * 1000 - TICK_MS))
        self._last = now

    def start(self):
        self.delays.clear()
        self._last = None
        self.timer.start()

    def stop(self) -> np.ndarray:
        self.timer.stop()
        return np.array(self.delays)


async def until(predicate, timeout=900.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.01)


def describe(label: str, d: np.ndarray) -> str:
    if d.size == 0:
        return f"{label:<58} no samples"
    ok = np.percentile(d, 99) < 16 and d.max() < 50
    return (f"{label:<58} p99 {np.percentile(d, 99):6.1f} ms  max {d.max():6.1f} ms  "
            f"median {np.median(d):4.1f} ms  ({d.size} ticks){'' if ok else '  <- over target'}")


def build_checkpoint(name: str, folder: Path) -> str:
    """A random-weight checkpoint, made in a child process: this one must not import torch."""
    if name == "demo":
        return "demo"
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); from bench_models import save_random_model; "
            f"save_random_model({name!r}, __import__('pathlib').Path({str(folder)!r}))")
    subprocess.run([sys.executable, "-c", code], check=True)
    return str(folder)


async def generate(window, tokens: int, probe: LatenessProbe) -> np.ndarray:
    from opt_desktop.engine import GenerationSettings

    parts, n, seed = [], 0, 0
    while n < tokens and seed < 50:  # random weights may end early on </s>: run again
        window.settings_panel.set_settings(GenerationSettings(max_new_tokens=tokens - n, do_sample=True, seed=seed))
        previous = window.presenter.trace
        probe.start()
        window.runs.generate()
        await until(lambda: window.presenter.trace is not previous and window.presenter.trace is not None
                    and window.presenter.trace.finished is not None and window.runs.in_flight == 0)
        parts.append(probe.stop())
        n += window.presenter.trace.finished.n_tokens
        seed += 1
    return np.concatenate(parts)


async def scenario(window, source: str, tokens: int, folder: Path) -> list[tuple[str, np.ndarray]]:
    from opt_desktop.engine import LoadRequest

    probe = LatenessProbe()
    results = []
    probe.start()
    await asyncio.sleep(2.0)
    results.append(("idle (baseline)", probe.stop()))

    probe.start()
    window.models.load(LoadRequest(source=source, device="cpu"))
    await until(lambda: window.controller.model is not None and not window.controller.is_loading)
    await asyncio.sleep(0.5)  # the first count of the prompt's tokens, the probe's answer
    results.append(("first load (torch import, tokenizer build, weights)", probe.stop()))

    window.prompt.set_text("The history of the transformer architecture begins with")
    window.tabs.setCurrentWidget(window.output)
    results.append((f"generating {tokens} tokens, Output tab", await generate(window, tokens, probe)))
    window.tabs.setCurrentWidget(window.inspector)
    results.append((f"generating {tokens} tokens, Inspector tab", await generate(window, tokens, probe)))

    # Full attention rows make the largest files.
    window.actions_.keep_rows.setChecked(True)
    window.tabs.setCurrentWidget(window.output)
    await generate(window, tokens, probe)
    path = folder / "bench.optsession"
    probe.start()
    await window.sessions.save_to(path)
    results.append(("saving a session with full attention rows", probe.stop()))
    probe.start()
    window.keeper.set_modified(True)
    await window.keeper.autosave_finished_run()
    results.append(("autosave of that session", probe.stop()))
    window.keeper.set_modified(False)
    probe.start()
    await window.sessions.open_path(path)
    results.append(("opening that session", probe.stop()))
    probe.start()
    await window.sessions.export_to("html", folder / "bench.html")
    results.append(("HTML export", probe.stop()))
    size = path.stat().st_size / 2**20
    print(f"session file: {size:.1f} MiB, {len(window.keeper.session.runs)} runs")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="opt-125m", help="opt-125m, opt-350m or demo")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--engine", choices=("process", "thread"), default="process")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp())
    os.environ["OPT_DESKTOP_HOME"] = str(tmp / "home")  # its autosaves stay out of the person's folders
    source = build_checkpoint(args.model, tmp / args.model)

    from opt_desktop.gui.app_state import AppState
    from opt_desktop.gui.controller import Controller
    from opt_desktop.gui.main_window import MainWindow
    from opt_desktop.presets import PresetStore

    app = QApplication.instance() or QApplication([])
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    engine = None
    if args.engine == "process":
        from opt_desktop.engine.process.engine_process import EngineProcess

        engine = EngineProcess()
    window = MainWindow(controller=Controller(engine), state=AppState(), presets=PresetStore(tmp / "presets"))
    window.show()
    with loop:
        results = loop.run_until_complete(scenario(window, source, args.tokens, tmp))
        window.keeper.set_modified(False)  # nothing to keep: close without asking about unsaved runs
        window.close()
    print(f"{args.model}, engine in a {args.engine}; timer lateness of a {TICK_MS} ms timer:")
    for label, delays in results:
        print("  " + describe(label, delays))
    print(f"torch imported by the window's process: {'torch' in sys.modules}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
