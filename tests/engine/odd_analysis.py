"""An analysis whose results are awkward to send, registered in whichever process imports this
module (a test, and an engine process started with ODD_WORKER)."""

from dataclasses import dataclass

import numpy as np

from opt_desktop.engine.jobs.dispatch import register_analysis
from opt_desktop.engine.process.protocol import register
from worker_patches import worker_command


@dataclass(frozen=True)
class OddRequest:
    what: str  # "bool_": a result holding a numpy bool; "object": one holding what no frame can carry


def _odd(loaded, request: OddRequest, job):
    return {"flag": np.bool_(True)} if request.what == "bool_" else {"thing": object()}


register_analysis(OddRequest, "odd", "The odd analysis", _odd, needs_model=False)
register(OddRequest)


ODD_WORKER = worker_command("import odd_analysis")  # the engine worker, with this analysis too
