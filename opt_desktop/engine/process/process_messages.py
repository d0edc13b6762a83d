"""The messages between the window and its engine process, and the types they may carry.

Window -> engine: Submit, Stop, SetHeadMask, CountTokens, Shutdown.
Engine -> window: Hello, JobRunning, JobEvent, JobEnded, TokenCount.
See docs/engine-protocol.md; protocol.py is the encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..jobs import job, service
from ..loading import precision
from ..messages import events, job_context, requests, results, settings
from . import protocol
from .protocol import register

PROTOCOL_VERSION = protocol.PROTOCOL_VERSION  # the messages' version is the frames': one number for both


@dataclass(frozen=True)
class Submit:
    job: int  # the window's number for the job; every message about it carries it
    request: Any


@dataclass(frozen=True)
class Stop:
    job: int  # 0: whichever job is running now


@dataclass(frozen=True)
class SetHeadMask:
    mask: tuple


@dataclass(frozen=True)
class CountTokens:
    ask: int
    text: str


@dataclass(frozen=True)
class Shutdown:
    pass


@dataclass(frozen=True)
class Hello:
    version: int
    pid: int


@dataclass(frozen=True)
class JobRunning:
    job: int


@dataclass(frozen=True)
class JobEvent:
    job: int
    event: Any


@dataclass(frozen=True)
class JobEnded:
    job: int
    end: job.JobEnd
    error: str = ""  # the class name of an expected error (errors.py), to raise the same kind here
    model: events.ModelInfo | None = None  # the engine's model after the job (loads change it)


@dataclass(frozen=True)
class TokenCount:
    ask: int
    n: int | None


register(Submit, Stop, SetHeadMask, CountTokens, Shutdown, Hello, JobRunning, JobEvent, JobEnded, TokenCount,
         job.JobEnd, job_context.JobProgress, precision.Capabilities, results.Divergence, results.HeadImportance,
         requests.LensRequest, requests.DivergenceRequest, requests.HeadImportanceRequest, requests.ProbeRequest,
         events.ModeAccuracy, events.ModelInfo, events.LoadProgress, events.StepStats, events.Started,
         events.PromptScored, events.TokenGenerated, events.HeadMaskChanged, events.Notice, events.Finished,
         events.LensResult, settings.LoadRequest, settings.GenerationRequest, settings.GenerationSettings,
         settings.InspectSettings, settings.HeadScale)
# Every analysis the engine runs may cross, with its results (dispatch.py's table, which service.py fills).
for _request_type, _analysis in service.ANALYSES.items():
    register(_request_type, *_analysis.result_types)
