"""The engine, the session layer and the CLI never import Qt, and importing the engine is cheap."""

import subprocess
import sys

BLOCK_QT = """
import sys
class _NoQt:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('PySide6', 'shiboken6', 'qasync', 'superqt', 'pyqtgraph', 'PyQt5', 'PyQt6'):
            raise ImportError('Qt is not allowed here: ' + name)
sys.meta_path.insert(0, _NoQt())
"""


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
