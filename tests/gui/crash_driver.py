"""A window that generates run after run and prints "finished N" as each is shown finished, until
it is killed: the crash test reads what the person would have seen, then what the autosave kept.

    python crash_driver.py   (OPT_DESKTOP_HOME and QT_QPA_PLATFORM set by the test)
"""

import asyncio
import sys

import qasync
from PySide6.QtWidgets import QApplication

from opt_desktop.engine import GenerationSettings, LoadRequest
from opt_desktop.gui.app_state import AppState
from opt_desktop.gui.main_window import MainWindow


def main() -> None:
    app = QApplication([])
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    window = MainWindow(state=AppState())
    window.show()
    shown = window.presenter.run_finished
    count = [0]

    def on_finished(trace):
        shown(trace)
        count[0] += 1
        print(f"finished {count[0]} {len(trace.generated_ids)}", flush=True)

    window.presenter.run_finished = on_finished

    async def work():
        window.models.load(LoadRequest(source="demo", device="cpu"))
        while window.controller.model is None or window.controller.is_loading:
            await asyncio.sleep(0.01)
        seed = 0
        while True:
            window.settings_panel.set_settings(GenerationSettings(max_new_tokens=6, do_sample=True, seed=seed))
            window.prompt.set_text(f"Run {seed}")
            window.runs.generate()
            while window.runs.in_flight or window.controller.is_busy:
                await asyncio.sleep(0.001)
            seed += 1

    with loop:
        loop.run_until_complete(work())


if __name__ == "__main__":
    sys.exit(main())
