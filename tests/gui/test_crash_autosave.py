"""kill -9 at any moment after a run is shown finished: the next start offers every such run."""

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from opt_desktop.session.autosave import Autosave
from opt_desktop.session.file import load_session

DRIVER = Path(__file__).with_name("crash_driver.py")


def test_no_run_shown_finished_is_lost_to_a_kill(tmp_path):
    rng = random.Random(5)
    env = {**os.environ, "OPT_DESKTOP_HOME": str(tmp_path / "home"), "QT_QPA_PLATFORM": "offscreen",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
    folder = tmp_path / "home" / "data" / "autosave"
    for cycle in range(4):
        kill_after = rng.randint(1, 6)
        proc = subprocess.Popen([sys.executable, str(DRIVER)], env=env, stdout=subprocess.PIPE, text=True)
        seen = 0
        try:
            for line in proc.stdout:
                if line.startswith("finished"):
                    seen = int(line.split()[1])
                    if seen == kill_after:
                        break
        finally:
            proc.send_signal(signal.SIGKILL)  # at once, whatever the window was doing
            proc.wait(30)
        assert seen == kill_after, f"the window stopped before its run {kill_after} (cycle {cycle})"
        found = Autosave(folder).recoverable()
        assert len(found) == 1, f"cycle {cycle}: {len(found)} autosaves"
        runs = load_session(found[0].path).runs
        assert len(runs) >= kill_after, f"cycle {cycle}: {len(runs)} runs kept of {kill_after} shown finished"
        assert all(r.finished is not None for r in runs[:kill_after])
        found[0].path.unlink()
