"""An analysis whose results are awkward to send, registered in whichever process imports this
module (a test, and an engine process started with `odd_worker_command()`)."""

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opt_desktop.engine.jobs.dispatch import register_analysis
from opt_desktop.engine.process.protocol import register


@dataclass(frozen=True)
class OddRequest:
    what: str  # "bool_": a result holding a numpy bool; "object": one holding what no frame can carry


def _odd(loaded, request: OddRequest, job):
    return {"flag": np.bool_(True)} if request.what == "bool_" else {"thing": object()}


register_analysis(OddRequest, "odd", "The odd analysis", _odd, needs_model=False)
register(OddRequest)


def odd_worker_command() -> list[str]:
    """The engine worker, with this analysis registered in it too."""
    here = str(Path(__file__).parent)
    code = (f"import sys; sys.path.insert(0, {here!r}); import odd_analysis; "
            "from opt_desktop.engine.process.worker import main; sys.exit(main())")
    return [sys.executable, "-c", code]
