"""How late a GUI-thread timer fires while the window generates: p99 and maximum delay.

Runs the real main window (offscreen unless a display is set) on a qasync loop, with the demo
model and with a random-weight opt-125m (the real config, saved and loaded like a checkpoint).
A 10 ms QTimer records how much later than due each tick arrives; the same timer is measured
with the window idle first, in the same process, as the baseline.

    python benchmarks/gui_responsiveness.py [--models demo opt-125m] [--tokens 200] [--inspector]
"""

from __future__ import annotations

import argparse
import asyncio
import os
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

from opt_desktop.engine import GenerationSettings, LoadRequest  # noqa: E402
from opt_desktop.gui.app_state import AppState  # noqa: E402
from opt_desktop.gui.main_window import MainWindow  # noqa: E402
from opt_desktop.presets import PresetStore  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
TICK_MS = 10


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


def save_random_opt(name: str, folder: Path) -> Path:
    import torch
    from transformers import GPT2TokenizerFast, OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    OPTForCausalLM(OPTConfig.from_pretrained(FIXTURES / "opt-configs" / name)).save_pretrained(folder)
    GPT2TokenizerFast.from_pretrained(FIXTURES / "opt-tokenizer").save_pretrained(folder)
    return folder


async def until(predicate, timeout=600.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.01)


def describe(label: str, d: np.ndarray) -> str:
    if d.size == 0:
        return f"{label}: no samples"
    return f"{label}: p99 {np.percentile(d, 99):.1f} ms, max {d.max():.1f} ms, median {np.median(d):.1f} ms ({d.size} ticks)"


async def measure(window: MainWindow, source: str, tokens: int, inspector: bool) -> None:
    probe = LatenessProbe()
    window.models.load(LoadRequest(source=source, device="cpu"))
    probe.start()  # loading, too, must not block the GUI thread
    await until(lambda: window.controller.model is not None and window.controller.model.source == source
                and not window.controller.is_loading)
    loading = probe.stop()
    probe.start()
    await asyncio.sleep(2.0)
    idle = probe.stop()
    window.tabs.setCurrentWidget(window.inspector if inspector else window.output)
    window.prompt.set_text("The history of the transformer architecture begins with")
    busy, n_tokens, rates, seed = [], 0, [], 0
    while n_tokens < tokens and seed < 50:  # random weights may end early on </s>: run again
        window.settings_panel.set_settings(GenerationSettings(max_new_tokens=tokens - n_tokens, do_sample=True,
                                                              seed=seed))
        previous = window.presenter.trace
        probe.start()
        window.runs.generate()
        await until(lambda: window.presenter.trace is not previous and window.presenter.trace is not None
                    and window.presenter.trace.finished is not None and not window.controller.is_running)
        busy.append(probe.stop())
        fin = window.presenter.trace.finished
        n_tokens += fin.n_tokens
        if fin.tokens_per_s:
            rates.append(fin.tokens_per_s)
        seed += 1
    busy = np.concatenate(busy)
    label = window.controller.model.label
    view = "inspector" if inspector else "output"
    print(f"{label} ({view} tab): {n_tokens} tokens in {seed} run(s), median {np.median(rates):.1f} tok/s")
    print("  " + describe("idle     ", idle))
    print("  " + describe("loading (the first load also imports torch)", loading))
    print("  " + describe("generating", busy))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["demo", "opt-125m"])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--inspector", action="store_true", help="watch the Inspector tab instead of Output")
    args = parser.parse_args()

    app = QApplication.instance() or QApplication([])
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    tmp = Path(tempfile.mkdtemp())
    os.environ["OPT_DESKTOP_CONFIG_DIR"] = str(tmp / "config")
    os.environ["OPT_DESKTOP_DATA_DIR"] = str(tmp / "data")  # its autosaves stay out of the person's folder
    window = MainWindow(state=AppState(), presets=PresetStore(tmp / "presets"))
    window.show()

    async def run_all():
        for name in args.models:
            source = name if name == "demo" else str(save_random_opt(name, tmp / name))
            await measure(window, source, args.tokens, args.inspector)

    with loop:
        loop.run_until_complete(run_all())
        window.keeper.set_modified(False)  # nothing to keep: close without asking about unsaved runs
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
