"""Saves killed mid-write leave temporary files named after their writer; the next save to the same
folder, and the next start, remove those of dead writers and nothing else."""

import signal
import subprocess
import sys


from opt_desktop.atomic import is_temp_name, remove_stale_temps, temp_name, write_atomic
from opt_desktop.session.autosave import Autosave
from opt_desktop.owner import own_tag

# A writer that gets halfway through a save, says so, and then hangs until it is killed.
HANGING_SAVE = """
import sys, time
from pathlib import Path
from opt_desktop.atomic import write_atomic

def write(f):
    f.write(b"x" * 100_000)
    f.flush()
    print("halfway", flush=True)
    time.sleep(600)

write_atomic(Path(sys.argv[1]), write)
"""


def kill_mid_save(target) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HANGING_SAVE, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "halfway"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def temps(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_killed_save_is_cleaned_up_by_the_next_save(tmp_path):
    target = tmp_path / "work.optsession"
    kill_mid_save(target)
    first = temps(tmp_path)
    assert len(first) == 1 and is_temp_name(first[0]) and first[0].startswith(".work.optsession.opt-desktop-")
    for _ in range(2):  # each new save removes what the killed one before it left
        kill_mid_save(target)
    left = temps(tmp_path)
    assert len(left) == 1 and left != first
    assert not target.exists()  # the file itself was never half-written

    write_atomic(tmp_path / "other.optsession", lambda f: f.write(b"fine"))
    assert temps(tmp_path) == [] and (tmp_path / "other.optsession").read_bytes() == b"fine"


def test_only_dead_writers_temporary_files_go(tmp_path):
    mine = temp_name(tmp_path / "a.optsession")  # this process is alive
    mine.write_bytes(b"in progress")
    assert own_tag() in mine.name
    strangers = [tmp_path / ".a.optsession.XyZ123.tmp", tmp_path / "notes.tmp", tmp_path / "a.optsession"]
    for p in strangers:
        p.write_bytes(b"not ours")
    dead = tmp_path / f".b.optsession.opt-desktop-{2**22 + 7}-12345-0123456789ab.tmp"
    dead.write_bytes(b"left by a killed save")
    assert remove_stale_temps(tmp_path) == [dead]
    assert mine.exists() and all(p.exists() for p in strangers)


def test_autosave_leftovers_are_removed_at_start(tmp_path, app_home):
    folder = Autosave().folder
    folder.mkdir(parents=True)
    kill_mid_save(folder / f"autosave-{2**22 + 9}-1-abcdef.optsession")
    # A temporary file of the autosaves written before writers were named (mkstemp's name), writer dead.
    old = folder / f".autosave-{2**22 + 11}-1-00ff.optsession.k2j3h4.tmp"
    old.write_bytes(b"old leftover")
    assert len(temps(folder)) == 2
    from opt_desktop.gui.startup import startup_checks

    report = startup_checks()
    assert temps(folder) == [] and len(report.removed) == 2
