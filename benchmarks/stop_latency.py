"""How fast Stop is honoured, and how fast the window closes, during a long prefill.

opt-125m with random weights (real config), a 1,500-token prompt, the default inspection:
  1. Stop during the prefill: Stop is pressed at a random moment of the prefill; latency is the
     time from the press to the job's end (p50, p99, max over the trials);
  2. Stop with a job queued behind the running one: Stop reaches the running generation, and the
     queued job is left to run;
  3. closing the window during the prefill: the time close() takes and whether any engine thread
     is left (the window offscreen, driven as in the GUI tests).

    python benchmarks/stop_latency.py [--trials 20] [--prompt 1500]

The targets (issue 12): p99 <= 0.5 s, and the window closed within 1 s with no thread left.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_models import save_random_model  # noqa: E402
from opt_desktop.engine import EngineService, GenerationRequest, GenerationSettings, LoadRequest  # noqa: E402
from opt_desktop.engine.messages.requests import HeadImportanceRequest  # noqa: E402


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def prompt_ids(n: int, seed: int) -> tuple[int, ...]:
    rng = random.Random(seed)
    return (2,) + tuple(rng.randrange(4, 50000) for _ in range(n - 1))


def prefill_seconds(engine, ids) -> float:
    t0 = time.perf_counter()
    engine.generate(GenerationRequest(prompt_ids=ids, settings=GenerationSettings(max_new_tokens=1)),
                    lambda e: None).result()
    return time.perf_counter() - t0


def stop_during_prefill(engine, n_prompt: int, trials: int) -> list[float]:
    latencies = []
    full = prefill_seconds(engine, prompt_ids(n_prompt, 0))
    print(f"prefill of {n_prompt} tokens with statistics: {full:.2f} s")
    rng = random.Random(1)
    for trial in range(trials):
        job = engine.submit(GenerationRequest(prompt_ids=prompt_ids(n_prompt, trial + 1),
                                              settings=GenerationSettings(max_new_tokens=4)))
        while job.state == "queued":
            time.sleep(0.001)
        time.sleep(rng.uniform(0.05, 0.9) * full)  # somewhere in the prefill or the prompt's statistics
        pressed = time.perf_counter()
        engine.stop()
        job.wait()
        latencies.append(time.perf_counter() - pressed)
        tokens = job.end.result.n_tokens if job.end.result is not None else 0
        if tokens:  # the first token comes before the prompt's statistics: Stop landed in those
            print(f"  trial {trial}: Stop landed after the first token, in the prompt's statistics")
    return latencies


def stop_with_a_queued_job(engine, n_prompt: int, trials: int) -> list[float]:
    latencies = []
    for trial in range(trials):
        running = engine.submit(GenerationRequest(prompt_ids=prompt_ids(200, trial),
                                                  settings=GenerationSettings(max_new_tokens=400)))
        queued = engine.submit(HeadImportanceRequest(prompt_ids(40, trial), n_prompt=20))
        while running.state != "running":
            time.sleep(0.001)
        time.sleep(0.3)
        pressed = time.perf_counter()
        engine.stop()
        running.wait()
        latencies.append(time.perf_counter() - pressed)
        assert running.end.reason == "cancelled", running.end
        queued.stop()  # on its own: it does not wait for anything else
        queued.wait()
    return latencies


def close_during_prefill(folder: Path, n_prompt: int) -> tuple[float, bool]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import asyncio

    import qasync
    from PySide6.QtWidgets import QApplication

    from opt_desktop.gui import session_dialogs
    from opt_desktop.gui.app_state import AppState
    from opt_desktop.gui.main_window import MainWindow

    session_dialogs.ask_unsaved = lambda parent, name: "discard"
    app = QApplication.instance() or QApplication([])
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    window = MainWindow(state=AppState())
    window.show()
    engine = window.controller.engine

    async def scenario():
        window.models.load(LoadRequest(source=str(folder), device="cpu"))
        while window.controller.model is None or window.controller.is_loading:
            await asyncio.sleep(0.02)
        window.runs.start(GenerationRequest(prompt_ids=prompt_ids(n_prompt, 99),
                                            settings=GenerationSettings(max_new_tokens=4)))
        while engine.running is None or engine.running.kind != "generate":
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.5)

    loop.run_until_complete(scenario())
    threads = engine.threads
    t0 = time.perf_counter()
    window.close()
    took = time.perf_counter() - t0
    left = any(t.is_alive() for t in threads)
    loop.close()
    return took, left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--prompt", type=int, default=1500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("OPT_DESKTOP_HOME", str(Path(tmp) / "home"))
        folder = save_random_model("opt-125m", Path(tmp) / "opt-125m")
        engine = EngineService()
        try:
            engine.load(LoadRequest(source=str(folder), device="cpu")).result()
            during = stop_during_prefill(engine, args.prompt, args.trials)
            queued = stop_with_a_queued_job(engine, args.prompt, max(3, args.trials // 4))
        finally:
            engine.shutdown()
        for name, values in (("Stop during a prefill", during), ("Stop with a job queued behind", queued)):
            print(f"{name}: p50 {percentile(values, 0.5) * 1000:.0f} ms, p99 {percentile(values, 0.99) * 1000:.0f} ms, "
                  f"max {max(values) * 1000:.0f} ms  ({len(values)} trials)")
        took, left = close_during_prefill(folder, args.prompt)
        print(f"Closing the window during a prefill: {took * 1000:.0f} ms, engine thread left running: {left}")


if __name__ == "__main__":
    main()
