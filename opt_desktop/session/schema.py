"""session.json: each run as JSON-ready data, validated on the way back. See docs/session-format.md.

The arrays are the source of the numbers a rebuilt run reads; the per-token entries here repeat
them (as float64 JSON numbers) so a person can read a run without the arrays.

Reading is strict: every count is bounded (session/limits.py) and checked against the others before
anything is sized from it, and every value must be one the app could save again (finite numbers, settings
and interventions the engine's own validators accept), so a file that opens can be saved, exported, re-run.
"""

from __future__ import annotations

import dataclasses
import math
from importlib import metadata
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from ..engine.messages.errors import SettingsError
from ..engine.messages.events import ATTENTION_STATS, HIDDEN_STATS, FinishReason, Finished, HeadMaskChanged, ModeAccuracy, ModelInfo, Started
from ..engine.messages.interventions_spec import check_head_mask, check_hidden_positions
from ..engine.messages.settings import GenerationSettings, HeadScale, InspectSettings
from . import limits
from .analyses import Analysis, RunShape, check_declared, check_params, check_values, expected_arrays, KIND_PATTERN
from .trace import LATER_ATTENTION_STATS, RunTrace

FORMAT = "opt-desktop-session"
SCHEMA_VERSION = 3
# Fields schema 1 (before interventions and forks) did not have, with the values they mean there.
SCHEMA_1_DEFAULTS = {"head_mask": [], "hidden_positions": [], "mask_changes": [], "parent": None,
                     "fork_position": None}
# Schema 2 had no analyses.
SCHEMA_2_DEFAULTS = {"analyses": []}

Text = Annotated[str, StringConstraints(max_length=limits.MAX_TEXT_CHARS)]
Piece = Annotated[str, StringConstraints(max_length=limits.MAX_PIECE_CHARS)]
Name = Annotated[str, StringConstraints(max_length=limits.MAX_NAME_CHARS)]
TokenId = Annotated[int, Field(ge=0, lt=limits.MAX_VOCAB)]
Position = Annotated[int, Field(ge=0, le=limits.MAX_POSITIONS)]
HeadMaskDoc = Annotated[list[tuple[Annotated[int, Field(ge=0, lt=limits.MAX_LAYERS)],
                                   Annotated[int, Field(ge=0, lt=limits.MAX_HEADS)], float]],
                        Field(max_length=limits.MAX_LAYERS * limits.MAX_HEADS)]


class _Doc(BaseModel):
    # Unknown keys are ignored so a file from a later release of the same schema still opens.
    # JSON has no NaN or infinity; a float field holding one (from Python) is refused too.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class ModeAccuracyDoc(_Doc):
    mean_kl: float = Field(ge=0.0)
    top1_agreement: float = Field(ge=0.0, le=1.0)
    n_positions: int = Field(ge=0, le=limits.MAX_POSITIONS)


class ModelInfoDoc(_Doc):
    """engine.events.ModelInfo, with every count bounded."""

    source: Name
    label: Name
    n_layers: int = Field(ge=1, le=limits.MAX_LAYERS)
    n_heads: int = Field(ge=1, le=limits.MAX_HEADS)
    hidden_size: int = Field(ge=1, le=limits.MAX_HIDDEN)
    word_embed_proj_dim: int = Field(ge=1, le=limits.MAX_HIDDEN)
    ffn_dim: int = Field(ge=1, le=limits.MAX_FFN)
    vocab_size: int = Field(ge=1, le=limits.MAX_VOCAB)
    context_length: int = Field(ge=1, le=limits.MAX_POSITIONS)
    n_params: int = Field(ge=0, le=limits.MAX_PARAMS)
    dtype: Name
    device: Name
    memory_bytes: int = Field(ge=0, le=limits.MAX_MEMORY_BYTES)
    pre_layer_norm: bool
    random_weights: bool = False
    eos_token_id: TokenId = 2
    bos_token_id: TokenId = 2
    revision: Name | None = None
    placement: list[tuple[Name, Name]] = Field([], max_length=limits.MAX_PLACEMENT)
    accuracy: ModeAccuracyDoc | None = None
    host: Name = ""

    @model_validator(mode="after")
    def _consistent(self):
        if self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of n_heads {self.n_heads}")
        for name in ("eos_token_id", "bos_token_id"):
            if getattr(self, name) >= self.vocab_size:
                raise ValueError(f"{name} {getattr(self, name)} is outside the vocabulary of {self.vocab_size}")
        return self

    def info(self) -> ModelInfo:
        values = self.model_dump()
        values["placement"] = tuple(tuple(p) for p in self.placement)
        values["accuracy"] = None if self.accuracy is None else ModeAccuracy(**self.accuracy.model_dump())
        return ModelInfo(**values)


class AlternativeDoc(_Doc):
    id: TokenId
    text: Piece
    prob: float


class TokenDoc(_Doc):
    position: Position
    id: TokenId
    text: Piece  # the token shown alone
    adds: Piece  # what it added to the streamed text
    logprob: float | None
    prob: float | None = None
    rank: int = Field(ge=0, le=limits.MAX_VOCAB)
    entropy: float | None
    elapsed_s: float
    top: list[AlternativeDoc] = Field(max_length=limits.MAX_TOP)


class MaskChangeDoc(_Doc):
    index: Position
    head_mask: HeadMaskDoc


class FinishedDoc(_Doc):
    reason: FinishReason
    text: Text
    n_tokens: Position
    elapsed_s: float
    time_to_first_token_s: float | None
    tokens_per_s: float | None
    memory_bytes: int | None = Field(None, ge=0, le=limits.MAX_MEMORY_BYTES)
    message: Annotated[str, StringConstraints(max_length=limits.MAX_NAME_CHARS)] = ""  # what went wrong, for "error"


class AnalysisDoc(_Doc):
    kind: Annotated[str, StringConstraints(pattern=f"^{KIND_PATTERN.pattern}$", max_length=64)]
    params: dict = {}
    arrays: dict[str, dict] = Field({}, max_length=64)
    pieces: dict[TokenId, Piece] = Field({}, max_length=limits.MAX_VOCAB)


class RunDoc(_Doc):
    label: Name
    parent: int | None = Field(ge=0, lt=limits.MAX_RUNS)
    fork_position: Position | None
    model: ModelInfoDoc
    prompt: Text
    prompt_ids: list[TokenId] = Field(min_length=1, max_length=limits.MAX_POSITIONS)
    prompt_pieces: list[Piece] = Field(max_length=limits.MAX_POSITIONS)
    n_prompt: Position
    max_new_tokens: Position
    seed: int = Field(ge=0, lt=2**63)
    settings: dict
    inspect: dict
    head_mask: HeadMaskDoc
    hidden_positions: list[Position] = Field(max_length=limits.MAX_POSITIONS)
    mask_changes: list[MaskChangeDoc] = Field(max_length=limits.MAX_POSITIONS)
    start_notices: list[Name] = Field(max_length=limits.MAX_NOTICES)
    notices: list[Name] = Field(max_length=limits.MAX_NOTICES)
    text: Text
    finished: FinishedDoc | None
    tokens: list[TokenDoc] = Field(max_length=limits.MAX_POSITIONS)
    # The prompt's alternatives shown alone ({"id": piece}), so the file names them without a tokenizer.
    alternative_pieces: dict[TokenId, Piece] = Field({}, max_length=limits.MAX_POSITIONS * limits.MAX_TOP)
    analyses: list[AnalysisDoc] = Field([], max_length=limits.MAX_ANALYSES)


class SessionDoc(_Doc):
    format: Literal["opt-desktop-session"]
    schema_version: int
    saved_at: Name | None = None
    source_file: Name | None = None
    runs: list[RunDoc] = Field(max_length=limits.MAX_RUNS)


def first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def versions() -> dict[str, str | None]:
    """Versions of the app and of the libraries that shaped the numbers, without importing them."""
    out = {}
    for key, dist in (("app", "opt-desktop"), ("torch", "torch"), ("transformers", "transformers")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


# --- writing -----------------------------------------------------------------------------------


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x  # JSON has no NaN; null stands for it


def _analysis_document(analysis: Analysis) -> dict:
    return {"kind": analysis.kind, "params": analysis.params,
            "arrays": {name: {"dtype": np.dtype(a.dtype).name, "shape": list(a.shape)}
                       for name, a in analysis.arrays.items()},
            "pieces": {str(i): piece for i, piece in sorted(analysis.pieces.items())}}


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
            "position": t, "id": int(trace.token_ids[t]), "text": trace.pieces[t], "adds": text,
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
        "prompt": s.prompt, "prompt_ids": [int(i) for i in s.prompt_ids], "prompt_pieces": list(s.prompt_pieces),
        "n_prompt": P, "max_new_tokens": s.max_new_tokens, "seed": s.seed,
        "settings": s.settings, "inspect": s.inspect,
        "head_mask": [list(x) for x in s.head_mask], "hidden_positions": list(s.hidden_positions),
        "mask_changes": [{"index": c.index, "head_mask": [list(x) for x in c.head_mask]} for c in trace.mask_changes],
        "start_notices": list(s.notices), "notices": list(trace.notices),
        "text": trace.text, "finished": finished, "tokens": tokens,
        "alternative_pieces": {str(i): piece for i, piece in sorted(trace.alternative_pieces.items())},
        "analyses": [_analysis_document(a) for a in trace.analyses],
    }


# --- reading -----------------------------------------------------------------------------------


def migrate(doc: dict) -> dict:
    """A session.json of an earlier schema, brought to SCHEMA_VERSION (the caller checked the version)."""
    version = doc.get("schema_version")
    if version in (1, 2) and isinstance(doc.get("runs"), list):
        defaults = {**(SCHEMA_1_DEFAULTS if version == 1 else {}), **SCHEMA_2_DEFAULTS}
        doc = {**doc, "schema_version": SCHEMA_VERSION,
               "runs": [{**defaults, **run} if isinstance(run, dict) else run for run in doc["runs"]]}
    return doc


def _known(kind, values: dict, what: str) -> dict:
    """Settings parsed as the engine parses a request: a value it would refuse is refused here too.
    Keys this version does not know (from a later release) are dropped."""
    fields = kind.model_fields
    try:
        return kind.parse(**{k: v for k, v in values.items() if k in fields}).model_dump()
    except SettingsError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _mask(entries, model: ModelInfo, what: str) -> tuple[tuple[int, int, float], ...]:
    seen = set()
    out = []
    for layer, head, scale in entries:
        try:
            HeadScale.parse(layer=layer, head=head, scale=scale)
        except SettingsError as exc:
            raise ValueError(f"{what}: head {layer}:{head}: {exc}") from None
        if (layer, head) in seen:
            raise ValueError(f"{what} lists head {layer}:{head} twice")
        seen.add((layer, head))
        out.append((layer, head, float(scale)))
    try:
        check_head_mask(out, model.n_layers, model.n_heads, model.label)
    except SettingsError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class CheckedRun:
    """A run document that passed check_run, with its values in the form the engine uses."""

    doc: RunDoc
    model: ModelInfo
    settings: dict
    inspect: dict
    head_mask: tuple
    hidden_positions: tuple
    mask_changes: tuple

    @property
    def n_positions(self) -> int:
        return self.doc.n_prompt + len(self.doc.tokens)

    def shape(self) -> RunShape:
        m = self.model
        return RunShape(n_layers=m.n_layers, n_heads=m.n_heads, n_positions=self.n_positions,
                        n_prompt=self.doc.n_prompt, vocab_size=m.vocab_size)

    def array_plan(self) -> dict[str, tuple[type, tuple[int, ...], bool]]:
        """Every array this run may have: name (without `runs.<i>.`) -> (dtype, shape, required)."""
        m, T = self.model, self.n_positions
        L, H, D, K = m.n_layers, m.n_heads, m.hidden_size, self.inspect["top_alternatives"]
        plan = {
            "token_ids": (np.int64, (T,), True), "logprob": (np.float32, (T,), True),
            "entropy": (np.float32, (T,), True), "rank": (np.int64, (T,), True),
            "top_ids": (np.int64, (T, K), True), "top_probs": (np.float32, (T, K), True),
            **{f"hidden_{n}": (np.int64 if n == "argmax" else np.float32, (L + 1, T), True) for n in HIDDEN_STATS},
            **{f"attn_{n}": (np.float32, (L, H, T), n not in LATER_ATTENTION_STATS) for n in ATTENTION_STATS},
            "residual": (np.float16, (L + 1, T, D), False), "residual_mask": (np.bool_, (T,), False),
            "attention_rows": (np.float16, (L, H, T, T), False),
        }
        for j, analysis in enumerate(self.doc.analyses):
            for name, declared in analysis.arrays.items():
                dtype, dims = check_declared(name, declared)
                plan[f"analyses.{j}.{name}"] = (dtype, dims, True)
        return plan


def check_run(doc: RunDoc, index: int, earlier: list[CheckedRun] = ()) -> CheckedRun:
    """Consistency the field types alone do not give; raises ValueError (in words)."""
    model = doc.model.info()
    V, P = model.vocab_size, doc.n_prompt
    if not (P == len(doc.prompt_ids) == len(doc.prompt_pieces)):
        raise ValueError(f"n_prompt is {P} but there are {len(doc.prompt_ids)} prompt ids "
                         f"and {len(doc.prompt_pieces)} prompt pieces")
    n_gen = len(doc.tokens)
    if n_gen > doc.max_new_tokens:
        raise ValueError(f"it has {n_gen} generated tokens but max_new_tokens is {doc.max_new_tokens}")
    if P + doc.max_new_tokens > model.context_length:
        raise ValueError(f"its prompt ({P} tokens) and max_new_tokens ({doc.max_new_tokens}) exceed the model's "
                         f"context of {model.context_length}")
    bad = next((i for i in doc.prompt_ids if i >= V), None)
    if bad is not None:
        raise ValueError(f"prompt id {bad} is outside the vocabulary of {V}")
    if doc.parent is not None:
        if doc.parent >= index:
            raise ValueError(f"parent is {doc.parent}, but a run can only fork from an earlier run")
        parent_length = earlier[doc.parent].n_positions if doc.parent < len(earlier) else None
        if doc.fork_position is not None and parent_length is not None and doc.fork_position >= parent_length:
            raise ValueError(f"fork_position is {doc.fork_position}, but run {doc.parent + 1} has "
                             f"{parent_length} positions")
    if doc.finished is not None and doc.finished.n_tokens != n_gen:
        raise ValueError(f"finished.n_tokens is {doc.finished.n_tokens} but {n_gen} tokens are listed")
    settings = _known(GenerationSettings, doc.settings, "settings")
    inspect = _known(InspectSettings, doc.inspect, "inspect")
    K = inspect["top_alternatives"]
    for i, tok in enumerate(doc.tokens):
        if tok.position != P + i:
            raise ValueError(f"tokens.{i}.position is {tok.position}, expected {P + i}")
        if tok.id >= V:
            raise ValueError(f"tokens.{i}.id {tok.id} is outside the vocabulary of {V}")
        if len(tok.top) > K:
            raise ValueError(f"tokens.{i} lists {len(tok.top)} alternatives, but the run kept {K}")
        if any(a.id >= V for a in tok.top):
            raise ValueError(f"tokens.{i} lists an alternative outside the vocabulary of {V}")
    if any(i >= V for i in doc.alternative_pieces):
        raise ValueError(f"alternative_pieces names a token id outside the vocabulary of {V}")
    head_mask = _mask(doc.head_mask, model, "head_mask")
    changes = []
    last = -1
    for j, change in enumerate(doc.mask_changes):
        if change.index <= last or change.index > n_gen:
            raise ValueError(f"mask_changes.{j}.index is {change.index}; changes must come in order, at "
                             f"generated tokens 0-{n_gen}")
        last = change.index
        changes.append(HeadMaskChanged(index=change.index, head_mask=_mask(change.head_mask, model,
                                                                           f"mask_changes.{j}.head_mask")))
    try:
        hidden = check_hidden_positions(doc.hidden_positions, P)
    except SettingsError as exc:
        raise ValueError(f"hidden_positions: {exc}") from None
    if list(hidden) != list(doc.hidden_positions):
        raise ValueError("hidden_positions are not in order, or list a position twice")
    checked = CheckedRun(doc=doc, model=model, settings=settings, inspect=inspect, head_mask=head_mask,
                         hidden_positions=hidden, mask_changes=tuple(changes))
    shape = checked.shape()
    for j, analysis in enumerate(doc.analyses):
        try:
            check_params(analysis.params)
            declared = {name: check_declared(name, d) for name, d in analysis.arrays.items()}
            expected = expected_arrays(analysis.kind, analysis.params, shape)
            if expected is not None:
                for name, (dtype, dims) in expected.items():
                    if name not in declared:
                        raise ValueError(f"it has no array {name}")
                    if declared[name] != (dtype, dims):
                        got_dtype, got_dims = declared[name]
                        raise ValueError(f"its array {name} is {np.dtype(got_dtype).name} {got_dims}, expected "
                                         f"{np.dtype(dtype).name} {dims}")
                extra = set(declared) - set(expected)
                if extra:
                    raise ValueError(f"it has an array {sorted(extra)[0]} that a {analysis.kind} has not")
        except ValueError as exc:
            raise ValueError(f"analyses.{j} ({analysis.kind}): {exc}") from None
    return checked


def restore_run(checked: CheckedRun, arrays: dict, *, owned: bool = False) -> RunTrace:
    """Rebuild a run from its checked document and its arrays (named without the `runs.<i>.` prefix)."""
    doc = checked.doc
    started = Started(
        model=checked.model, prompt=doc.prompt, prompt_ids=tuple(doc.prompt_ids),
        prompt_pieces=tuple(doc.prompt_pieces), max_new_tokens=doc.max_new_tokens, seed=doc.seed,
        settings=checked.settings, inspect=checked.inspect, notices=tuple(doc.start_notices),
        head_mask=checked.head_mask, hidden_positions=checked.hidden_positions)
    ids = arrays.get("token_ids")
    if ids is not None and ids.ndim == 1 and ids[doc.n_prompt:].tolist() != [t.id for t in doc.tokens]:
        raise ValueError("the token ids in session.json and in arrays.safetensors differ")
    V = checked.model.vocab_size
    for name in ("top_ids",):
        a = arrays.get(name)
        if a is not None and a.size and (a.min() < 0 or a.max() >= V):
            raise ValueError(f"the array {name} holds token ids outside the vocabulary of {V}")
    rank = arrays.get("rank")
    if rank is not None and rank.size and rank.min() < 0:
        raise ValueError("the array rank holds negative ranks")
    fin = doc.finished
    finished = None
    if fin is not None:
        finished = Finished(reason=fin.reason, text=fin.text, token_ids=tuple(t.id for t in doc.tokens),
                            n_tokens=fin.n_tokens, elapsed_s=fin.elapsed_s,
                            time_to_first_token_s=fin.time_to_first_token_s, tokens_per_s=fin.tokens_per_s,
                            memory_bytes=fin.memory_bytes, message=fin.message)
    shape = checked.shape()
    analyses = []
    for j, a in enumerate(doc.analyses):
        own = {name: arrays[f"analyses.{j}.{name}"] for name in a.arrays}
        try:
            check_values(a.kind, own, shape, a.pieces)
        except ValueError as exc:
            raise ValueError(f"analyses.{j} ({a.kind}): {exc}") from None
        analyses.append(Analysis(kind=a.kind, params=a.params, arrays=own, pieces=dict(a.pieces)))
    base = {k: v for k, v in arrays.items() if not k.startswith("analyses.")}
    return RunTrace.restore(
        started, base, pieces=doc.prompt_pieces + [t.text for t in doc.tokens],
        text_parts=[t.adds for t in doc.tokens], elapsed=[t.elapsed_s for t in doc.tokens],
        top_pieces=[[a.text for a in t.top] for t in doc.tokens], notices=doc.notices, finished=finished,
        mask_changes=checked.mask_changes, parent=doc.parent, fork_position=doc.fork_position, label=doc.label,
        alternative_pieces=doc.alternative_pieces, analyses=analyses, owned=owned)
