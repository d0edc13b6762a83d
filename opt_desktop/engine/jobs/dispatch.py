"""Which job a request makes: one table for every engine, in this process or another.

Loads and generations are built in; each analysis registers its request type here with the
function the worker runs for it. An engine in another process uses the same table to name a job's
kind, and its wire protocol allows exactly the request and result types registered here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..messages.settings import GenerationRequest, LoadRequest

AnalysisFn = Callable[[Any, Any, Any], Any]  # (loaded model, request, job) -> result, on the worker


@dataclass(frozen=True)
class Analysis:
    kind: str  # the job's kind ("attribution", ...)
    doing: str  # what the person is told failed ("Attribution")
    fn: AnalysisFn
    needs_model: bool = True
    result_types: tuple[type, ...] = ()  # results that must cross to a window in another process


ANALYSES: dict[type, Analysis] = {}


def register_analysis(request_type: type, kind: str, doing: str, fn: AnalysisFn, result_types=(),
                      needs_model: bool = True) -> None:
    """Make `submit(request_type(...))` run `fn(loaded, request, job)` on the worker."""
    ANALYSES[request_type] = Analysis(kind, doing, fn, needs_model, tuple(result_types))


def job_kind(request: Any) -> str:
    """The kind of job `request` makes; TypeError for a request no engine runs."""
    if isinstance(request, LoadRequest):
        return "load"
    if isinstance(request, GenerationRequest):
        return "generate"
    analysis = ANALYSES.get(type(request))
    if analysis is None:
        raise TypeError(f"the engine has no job for {type(request).__name__}")
    return analysis.kind
