"""session.json: each run as JSON-ready data, validated on the way back. See docs/session-format.md.

The arrays are the source of the numbers a rebuilt run reads; the per-token entries here repeat
them (as float64 JSON numbers) so a person can read a run without the arrays.
"""

from __future__ import annotations

import dataclasses
import math
from importlib import metadata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..engine.errors import SettingsError
from ..engine.events import FinishReason, Finished, HeadMaskChanged, ModelInfo, Started
from ..engine.settings import GenerationSettings, InspectSettings
from .trace import RunTrace

FORMAT = "opt-desktop-session"
SCHEMA_VERSION = 2
# Fields schema 1 (before interventions and forks) did not have, with the values they mean there.
SCHEMA_1_DEFAULTS = {"head_mask": [], "hidden_positions": [], "mask_changes": [], "parent": None,
                     "fork_position": None}

HeadMaskDoc = list[tuple[int, int, float]]


class _Doc(BaseModel):
    # Unknown keys are ignored so a file from a later release of the same schema still opens.
    model_config = ConfigDict(extra="ignore")


class AlternativeDoc(_Doc):
    id: int
    text: str
    prob: float


class TokenDoc(_Doc):
    position: int
    id: int
    text: str  # the token shown alone
    adds: str  # what it added to the streamed text
    logprob: float | None
    prob: float | None = None
    rank: int
    entropy: float | None
    elapsed_s: float
    top: list[AlternativeDoc]


class MaskChangeDoc(_Doc):
    index: int = Field(ge=0)
    head_mask: HeadMaskDoc


class FinishedDoc(_Doc):
    reason: FinishReason
    text: str
    n_tokens: int = Field(ge=0)
    elapsed_s: float
    time_to_first_token_s: float | None
    tokens_per_s: float | None
    memory_bytes: int | None = None
    message: str = ""  # what went wrong, for reason "error"


class RunDoc(_Doc):
    label: str
    parent: int | None = Field(ge=0)
    fork_position: int | None = Field(ge=0)
    model: ModelInfo
    prompt: str
    prompt_ids: list[int] = Field(min_length=1)
    prompt_pieces: list[str]
    n_prompt: int
    max_new_tokens: int = Field(ge=0)
    seed: int
    settings: dict
    inspect: dict
    head_mask: HeadMaskDoc
    hidden_positions: list[int]
    mask_changes: list[MaskChangeDoc]
    start_notices: list[str]
    notices: list[str]
    text: str
    finished: FinishedDoc | None
    tokens: list[TokenDoc]
    # The prompt's alternatives shown alone ({"id": piece}), so the file names them without a tokenizer.
    alternative_pieces: dict[int, str] = {}


class SessionDoc(_Doc):
    format: Literal["opt-desktop-session"]
    schema_version: int
    runs: list[RunDoc]


def first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg', 'invalid value')}" if where else err.get("msg", "invalid value")


def versions() -> dict[str, str | None]:
    """Versions of the app and of the libraries that shaped the numbers, without importing them."""
    out = {}
    for key, dist in (("app", "opt-desktop"), ("torch", "torch"), ("transformers", "transformers")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x  # JSON has no NaN; null stands for it


def run_document(trace: RunTrace) -> dict:
    """One run as session.json stores it."""
    s = trace.started
    P = trace.n_prompt
    tokens = []
    top_ids, top_probs = trace.top_ids, trace.top_probs
    for i, (text, elapsed, pieces) in enumerate(zip(trace.text_parts, trace.elapsed, trace.top_pieces)):
        t = P + i
        logprob = _num(trace.logprob[t])
        tokens.append({
            "position": t, "id": trace.token_ids[t], "text": trace.pieces[t], "adds": text,
            "logprob": logprob, "prob": None if logprob is None else math.exp(logprob),
            "rank": int(trace.rank[t]), "entropy": _num(trace.entropy[t]), "elapsed_s": float(elapsed),
            "top": [{"id": int(tid), "text": piece, "prob": float(p)}
                    for tid, piece, p in zip(top_ids[t].tolist(), pieces, top_probs[t].tolist())
                    if not math.isnan(p)],
        })
    fin = trace.finished
    finished = None
    if fin is not None:
        finished = {"reason": fin.reason, "text": fin.text, "n_tokens": fin.n_tokens, "elapsed_s": fin.elapsed_s,
                    "time_to_first_token_s": fin.time_to_first_token_s, "tokens_per_s": fin.tokens_per_s,
                    "memory_bytes": fin.memory_bytes, "message": fin.message}
    return {
        "label": trace.label, "parent": trace.parent, "fork_position": trace.fork_position,
        "model": dataclasses.asdict(s.model),
        "prompt": s.prompt, "prompt_ids": list(s.prompt_ids), "prompt_pieces": list(s.prompt_pieces),
        "n_prompt": P, "max_new_tokens": s.max_new_tokens, "seed": s.seed,
        "settings": s.settings, "inspect": s.inspect,
        "head_mask": [list(x) for x in s.head_mask], "hidden_positions": list(s.hidden_positions),
        "mask_changes": [{"index": c.index, "head_mask": [list(x) for x in c.head_mask]} for c in trace.mask_changes],
        "start_notices": list(s.notices), "notices": list(trace.notices),
        "text": trace.text, "finished": finished, "tokens": tokens,
        "alternative_pieces": {str(i): piece for i, piece in sorted(trace.alternative_pieces.items())},
    }


def migrate(doc: dict) -> dict:
    """A session.json of an earlier schema, brought to SCHEMA_VERSION (the caller checked the version)."""
    if doc.get("schema_version") == 1 and isinstance(doc.get("runs"), list):
        doc = {**doc, "schema_version": SCHEMA_VERSION,
               "runs": [{**SCHEMA_1_DEFAULTS, **run} if isinstance(run, dict) else run for run in doc["runs"]]}
    return doc


def _normal(kind, values: dict) -> dict:
    # The engine records settings as model_dump() of the request's settings; parsing them again gives
    # the same Python types (tuples, not JSON lists). Values this version does not know stay as written.
    try:
        return kind.parse(**values).model_dump()
    except (SettingsError, TypeError):
        return values


def check_run(doc: RunDoc, index: int) -> None:
    """Consistency the field types alone do not give; raises ValueError."""
    if not (doc.n_prompt == len(doc.prompt_ids) == len(doc.prompt_pieces)):
        raise ValueError(f"n_prompt is {doc.n_prompt} but there are {len(doc.prompt_ids)} prompt ids "
                         f"and {len(doc.prompt_pieces)} prompt pieces")
    if doc.parent is not None and doc.parent >= index:
        raise ValueError(f"parent is {doc.parent}, but a run can only fork from an earlier run")
    if doc.finished is not None and doc.finished.n_tokens != len(doc.tokens):
        raise ValueError(f"finished.n_tokens is {doc.finished.n_tokens} but {len(doc.tokens)} tokens are listed")
    for i, tok in enumerate(doc.tokens):
        if tok.position != doc.n_prompt + i:
            raise ValueError(f"tokens.{i}.position is {tok.position}, expected {doc.n_prompt + i}")


def restore_run(doc: RunDoc, arrays: dict) -> RunTrace:
    """Rebuild a run from its document and its arrays (named without the `runs.<i>.` prefix)."""
    started = Started(
        model=doc.model, prompt=doc.prompt, prompt_ids=tuple(doc.prompt_ids), prompt_pieces=tuple(doc.prompt_pieces),
        max_new_tokens=doc.max_new_tokens, seed=doc.seed, settings=_normal(GenerationSettings, doc.settings),
        inspect=_normal(InspectSettings, doc.inspect), notices=tuple(doc.start_notices),
        head_mask=tuple(doc.head_mask), hidden_positions=tuple(doc.hidden_positions))
    ids = arrays.get("token_ids")
    if ids is not None and ids.ndim == 1 and ids[doc.n_prompt:].tolist() != [t.id for t in doc.tokens]:
        raise ValueError("the token ids in session.json and in arrays.safetensors differ")
    fin = doc.finished
    finished = None
    if fin is not None:
        finished = Finished(reason=fin.reason, text=fin.text, token_ids=tuple(t.id for t in doc.tokens),
                            n_tokens=fin.n_tokens, elapsed_s=fin.elapsed_s,
                            time_to_first_token_s=fin.time_to_first_token_s, tokens_per_s=fin.tokens_per_s,
                            memory_bytes=fin.memory_bytes, message=fin.message)
    return RunTrace.restore(
        started, arrays, pieces=doc.prompt_pieces + [t.text for t in doc.tokens],
        text_parts=[t.adds for t in doc.tokens], elapsed=[t.elapsed_s for t in doc.tokens],
        top_pieces=[[a.text for a in t.top] for t in doc.tokens], notices=doc.notices, finished=finished,
        mask_changes=[HeadMaskChanged(index=c.index, head_mask=tuple(c.head_mask)) for c in doc.mask_changes],
        parent=doc.parent, fork_position=doc.fork_position, label=doc.label,
        alternative_pieces=doc.alternative_pieces)
