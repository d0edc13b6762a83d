"""The layers hold: checked statically by import-linter (the contracts in pyproject.toml), and at run
time (the engine, the session layer and the CLI really run without Qt; importing the engine is cheap)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

BLOCK_QT = """
import sys
class _NoQt:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('PySide6', 'shiboken6', 'qasync', 'superqt', 'pyqtgraph', 'PyQt5', 'PyQt6'):
            raise ImportError('Qt is not allowed here: ' + name)
sys.meta_path.insert(0, _NoQt())
"""


def _lint(package_parent: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with this repository's contracts, over the opt_desktop package found in `package_parent`."""
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the test extra (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
                          cwd=package_parent, env=env, capture_output=True, text=True, timeout=240)


def test_import_contracts_are_kept():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 kept, 0 broken" in out.stdout


@pytest.mark.parametrize("module, line, broken", [
    # A lazy import inside a function that no test calls: the run-time checks below cannot see it.
    ("engine/running/lens.py", "def _never_called():\n    import PySide6.QtCore  # noqa\n",
     "Only the GUI imports Qt"),
    # Deny by default: a module nobody listed anywhere, outside the GUI, may not import Qt either.
    ("brand_new_module.py", "import pyqtgraph  # noqa\n", "Only the GUI imports Qt"),
    ("session/describe.py", "def _never_called():\n    from ..gui.widgets import heatmap  # noqa\n",
     "Layers: gui > session > engine"),
    ("brand_new_module.py", "from .gui import app  # noqa\n", "Only the GUI and the launcher import the GUI"),
    # A room reaching up: running code may not depend on the jobs that run it.
    ("engine/running/generate.py", "def _never_called():\n    from ..jobs.job import Job  # noqa\n",
     "Engine rooms"),
    # The cycle this contract was written against: the loader imports hub_cache, which imported the loader.
    ("engine/loading/hub_cache.py", "def _never_called():\n    from .loader import locate  # noqa\n",
     "No import cycles"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, broken):
    shutil.copytree(ROOT / "opt_desktop", tmp_path / "opt_desktop", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "opt_desktop" / module
    before = target.read_text(encoding="utf-8") if target.exists() else ""
    target.write_text(before + "\n\n" + line, encoding="utf-8")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert f"{broken}" in out.stdout and "BROKEN" in out.stdout.split(broken, 1)[1].splitlines()[0], out.stdout


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_QT + code], capture_output=True, text=True, timeout=240)


def test_engine_session_and_cli_run_without_qt():
    out = _run("""
import opt_desktop.engine, opt_desktop.session, opt_desktop.cli, opt_desktop.presets
from opt_desktop.engine import EngineService, GenerationRequest, GenerationSettings, LoadRequest
from opt_desktop.session import RunTrace
svc = EngineService()
svc.load(LoadRequest(source='demo', device='cpu')).result()
events = []
svc.generate(GenerationRequest(prompt='hi', settings=GenerationSettings(max_new_tokens=3)), events.append).result()
trace = RunTrace(events[0])
for e in events[1:]:
    trace.apply(e)
svc.shutdown()
print(trace.n_generated)
""")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"


def test_importing_the_engine_does_not_import_torch():
    out = _run("import sys, opt_desktop.engine, opt_desktop.session; print('torch' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
