"""A run as numpy arrays, grown from the engine's events. Qt-free; one thread at a time.

Positions 0..T-1 are the prompt tokens (the leading `</s>` included) then the generated tokens.
Per-layer arrays hold NaN for positions not (yet) fed to the model, which is always true of the
last generated token. `arrays()` and `RunTrace.restore` are the saved form (docs/session-format.md).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..engine.messages.events import (
    ATTENTION_STATS,
    HIDDEN_STATS,
    Event,
    Finished,
    HeadMaskChanged,
    Notice,
    PromptScored,
    Started,
    StepStats,
    TokenGenerated,
)
from .analyses import Analysis
from .run_analyses import RunAnalyses

# Attention statistics that files written before them lack (docs/session-format.md): such a run
# opens with them listed in `RunTrace.missing_attention`, not as if they had been captured.
LATER_ATTENTION_STATS = ("previous", "induction")


class _UpToLength:
    """A per-position array of a trace (`_name` holds it at full capacity), up to the positions so far."""

    def __set_name__(self, owner, name: str) -> None:
        self._store = f"_{name}"

    def __get__(self, trace, owner=None) -> np.ndarray:
        return getattr(trace, self._store)[: trace.length]


class RunTrace(RunAnalyses):
    def __init__(self, started: Started, *, capacity: int | None = None):
        self.started = started
        info = started.model
        self.n_layers = info.n_layers
        self.n_heads = info.n_heads
        self.n_prompt = len(started.prompt_ids)
        cap = self.n_prompt + started.max_new_tokens if capacity is None else capacity
        self.capacity = cap
        k = int(started.inspect.get("top_alternatives", 10))
        L, H = self.n_layers, self.n_heads

        self.token_ids: list[int] = list(started.prompt_ids)
        self.pieces: list[str] = list(started.prompt_pieces)
        self.text_parts: list[str] = []  # generated text, one entry per generated token
        self.elapsed: list[float] = []  # per generated token
        self.alternative_pieces: dict[int, str] = {}  # the prompt's alternatives, shown alone
        self.top_pieces: list[tuple[str, ...]] = []  # per generated token, its alternatives shown alone
        self.notices: list[str] = list(started.notices)
        # The engine repeats each start notice as a Notice event; those echoes are not new notices.
        self._echoes: list[str] = list(started.notices)
        self.finished: Finished | None = None
        self.mask_changes: list[HeadMaskChanged] = []
        # Where this run sits in its Session: the run it forks from and the position it replaced there.
        self.parent: int | None = None
        self.fork_position: int | None = None
        self.label: str = ""
        # Results computed on the run after it was made (the lens of every position, head importance, ...).
        self.analyses: list[Analysis] = []

        nan = np.nan
        self._logprob = np.full(cap, nan, np.float32)
        self._entropy = np.full(cap, nan, np.float32)
        self._rank = np.zeros(cap, np.int64)
        self._top_ids = np.zeros((cap, k), np.int64)
        self._top_probs = np.full((cap, k), nan, np.float32)
        self._hidden = {name: np.full((L + 1, cap), nan, np.float32) for name in HIDDEN_STATS}
        self._hidden["argmax"] = np.full((L + 1, cap), -1, np.int64)
        self._attention = {name: np.full((L, H, cap), nan, np.float32) for name in ATTENTION_STATS}
        self.missing_attention: frozenset[str] = frozenset()  # statistics its file did not have
        # (L+1, cap, D) in the dtype the engine sent (float32 rows are exact, see engine/running/capture.py),
        # allocated on first use; files hold float16.
        self._residual: np.ndarray | None = None
        self._residual_mask = np.zeros(cap, bool)
        self._attention_rows: list[StepStats] = []

    # --- growing -------------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        if isinstance(event, PromptScored):
            n = self.n_prompt
            k = min(event.top_ids.shape[1], self._top_ids.shape[1]) if event.top_ids.ndim == 2 else 0
            self._logprob[:n] = event.logprob
            self._entropy[:n] = event.entropy
            self._rank[:n] = event.rank
            if k:
                self._top_ids[:n, :k] = event.top_ids[:, :k]
                self._top_probs[:n, :k] = event.top_probs[:, :k]
            self.alternative_pieces.update(event.alternative_pieces)
            self._put_stats(event.fed)
        elif isinstance(event, TokenGenerated):
            t = event.position
            if t >= self.capacity:
                raise ValueError(f"token at position {t} is past this run's capacity {self.capacity}")
            self.token_ids.append(event.token_id)
            self.pieces.append(event.piece)
            self.text_parts.append(event.text)
            self.elapsed.append(event.elapsed_s)
            self.top_pieces.append(tuple(event.top_pieces))
            self._logprob[t] = event.logprob
            self._entropy[t] = event.entropy
            self._rank[t] = event.rank
            k = min(len(event.top_ids), self._top_ids.shape[1])
            self._top_ids[t, :k] = event.top_ids[:k]
            self._top_probs[t, :k] = event.top_probs[:k]
            self._put_stats(event.fed)
        elif isinstance(event, Notice):
            if self._echoes and event.message == self._echoes[0]:
                self._echoes.pop(0)
            else:
                self.notices.append(event.message)
        elif isinstance(event, HeadMaskChanged):
            self.mask_changes.append(event)
        elif isinstance(event, Finished):
            self.finished = event
            # A character still incomplete when the run ended is only in the summary's text.
            tail = event.text[len(self.text):] if event.text.startswith(self.text) else ""
            if tail and self.text_parts:
                self.text_parts[-1] += tail
        elif isinstance(event, Started):
            raise ValueError("a run trace starts from exactly one Started event")

    def _put_stats(self, fed: StepStats | None) -> None:
        if fed is None:
            return
        sl = slice(fed.start, fed.start + fed.count)
        for name, arr in fed.hidden.items():
            self._hidden[name][:, sl] = arr
        for name, arr in fed.attention.items():
            self._attention[name][:, :, sl] = arr
        if fed.residual is not None:
            if self._residual is None:
                L1, _, D = fed.residual.shape
                self._residual = np.zeros((L1, self.capacity, D), fed.residual.dtype)
            self._residual[:, sl] = fed.residual
            self._residual_mask[sl] = True
        if fed.attention_rows is not None:
            self._attention_rows.append(fed)

    # --- reading -------------------------------------------------------------------------------

    @property
    def length(self) -> int:
        """T: positions so far, prompt included."""
        return len(self.token_ids)

    @property
    def n_generated(self) -> int:
        return self.length - self.n_prompt

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def generated_ids(self) -> list[int]:
        return self.token_ids[self.n_prompt:]

    # (T,) or (T, k) per position, read from the arrays grown to the run's capacity.
    logprob = _UpToLength()
    entropy = _UpToLength()
    rank = _UpToLength()
    top_ids = _UpToLength()
    top_probs = _UpToLength()

    def hidden(self, name: str) -> np.ndarray:
        """(L+1, T) statistic named in HIDDEN_STATS."""
        return self._hidden[name][:, : self.length]

    def attention(self, name: str) -> np.ndarray:
        """(L, H, T) statistic named in ATTENTION_STATS (all NaN when it is in `missing_attention`)."""
        return self._attention[name][:, :, : self.length]

    def residual_rows(self, position: int) -> np.ndarray | None:
        """(L+1, D) residual stream at `position` (float32 while exact, float16 from a file or a large
        model), or None when it was not kept or not fed."""
        if self._residual is None or not (0 <= position < self.length) or not self._residual_mask[position]:
            return None
        return self._residual[:, position]

    def next_token(self, position: int) -> int | None:
        return self.token_ids[position + 1] if position + 1 < self.length else None

    @property
    def has_attention_rows(self) -> bool:
        return bool(self._attention_rows)

    def attention_matrix(self, layer: int, head: int) -> np.ndarray | None:
        """(T, T) weights of one head, row t = query t over keys 0..t (NaN above the diagonal)."""
        if not self._attention_rows:
            return None
        T = self.length
        out = np.full((T, T), np.nan, np.float32)
        for fed in self._attention_rows:
            rows = fed.attention_rows[layer][head]  # (q, k)
            q, k = rows.shape
            out[fed.start: fed.start + q, :k] = rows
        out[np.triu_indices(T, 1)] = np.nan  # keys after the query were never visible
        return out

    def attention_rows(self) -> np.ndarray | None:
        """(L, H, T, T) float16 kept attention weights, NaN above the diagonal and where not kept."""
        if not self._attention_rows:
            return None
        T = self.length
        out = np.full((self.n_layers, self.n_heads, T, T), np.nan, np.float16)
        for fed in self._attention_rows:
            for layer, rows in enumerate(fed.attention_rows):  # (H, q, k)
                q, k = rows.shape[1:]
                out[layer, :, fed.start: fed.start + q, :k] = rows
        above = np.triu_indices(T, 1)
        out[:, :, above[0], above[1]] = np.nan
        return out

    # --- interventions and pieces --------------------------------------------------------------

    def head_mask_at(self, index: int) -> tuple[tuple[int, int, float], ...]:
        """The head mask in force when generated token `index` was produced (start mask + changes)."""
        mask = self.started.head_mask
        for change in self.mask_changes:
            if change.index <= index:
                mask = change.head_mask
        return mask

    def known_pieces(self) -> dict[int, str]:
        """Every token id this run has a piece for (its own tokens and the alternatives it showed)."""
        known: dict[int, str] = dict(self.alternative_pieces)
        for ids, pieces in zip(self.top_ids[self.n_prompt:].tolist(), self.top_pieces):
            known.update(zip(ids, pieces))
        known.update(zip(self.token_ids, self.pieces))
        return known

    def mask_schedule(self) -> tuple[tuple[int, tuple[tuple[int, int, float], ...]], ...]:
        """(first position, head mask) pairs: the mask each teacher-forced position ran under.

        The start mask covers the prompt; a change reported at generated token i took effect in the
        forward step that fed position n_prompt + i - 1 (the step that produced token i)."""
        schedule = [(0, tuple(self.started.head_mask))]
        for change in self.mask_changes:
            start = max(self.n_prompt, self.n_prompt + change.index - 1)
            schedule = [(p, m) for p, m in schedule if p < start] + [(start, tuple(change.head_mask))]
        return tuple(schedule)

    # --- saved form (see docs/session-format.md) -----------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        """The run's arrays trimmed to its T positions, by the names they have in a session file."""
        T = self.length
        out = {
            "token_ids": np.asarray(self.token_ids, np.int64),
            "logprob": self.logprob, "entropy": self.entropy, "rank": self.rank,
            "top_ids": self.top_ids, "top_probs": self.top_probs,
        }
        for name in HIDDEN_STATS:
            out[f"hidden_{name}"] = self.hidden(name)
        for name in ATTENTION_STATS:
            if name not in self.missing_attention:  # stays missing, not NaN as if captured and empty
                out[f"attn_{name}"] = self.attention(name)
        if self._residual is not None:
            out["residual"] = self._residual[:, :T].astype(np.float16, copy=False)
            out["residual_mask"] = self._residual_mask[:T]
        rows = self.attention_rows()
        if rows is not None:
            out["attention_rows"] = rows
        for j, analysis in enumerate(self.analyses):
            for name, a in analysis.arrays.items():
                out[f"analyses.{j}.{name}"] = a
        return {name: np.ascontiguousarray(a) for name, a in out.items()}

    @classmethod
    def restore(cls, started: Started, arrays: Mapping[str, np.ndarray], *, pieces: Sequence[str],
                text_parts: Sequence[str], elapsed: Sequence[float], top_pieces: Sequence[Sequence[str]],
                notices: Sequence[str], finished: Finished | None,
                mask_changes: Sequence[HeadMaskChanged] = (), parent: int | None = None,
                fork_position: int | None = None, label: str = "",
                alternative_pieces: Mapping[int, str] | None = None, analyses: Sequence[Analysis] = (),
                owned: bool = False) -> "RunTrace":
        """Rebuild a run from saved data (`arrays()` and the fields beside it).

        `owned`: the arrays are fresh and this trace may keep them (the file reader's); otherwise
        they are copied. Raises ValueError naming the first array or field that does not fit the others.
        """
        ids = arrays.get("token_ids")
        if ids is None:
            raise ValueError("the array token_ids is missing")
        T = int(ids.shape[0]) if ids.ndim == 1 else -1
        trace = cls(started, capacity=0)  # the arrays below replace the empty ones
        L, H, P = trace.n_layers, trace.n_heads, trace.n_prompt
        if T < P:
            raise ValueError(f"token_ids has shape {ids.shape}, expected ({P} prompt tokens or more,)")
        n_gen = T - P
        for name, values in (("pieces", pieces), ("text_parts", text_parts), ("elapsed", elapsed),
                             ("top_pieces", top_pieces)):
            expected = T if name == "pieces" else n_gen
            if len(values) != expected:
                raise ValueError(f"{name} has {len(values)} entries for {expected} tokens")
        if ids[:P].tolist() != list(started.prompt_ids):
            raise ValueError("token_ids does not start with the prompt's token ids")
        top = arrays.get("top_ids")
        K = int(top.shape[1]) if top is not None and top.ndim == 2 else 1
        D = started.model.hidden_size
        expected = {
            "token_ids": ((T,), np.int64), "logprob": ((T,), np.float32), "entropy": ((T,), np.float32),
            "rank": ((T,), np.int64), "top_ids": ((T, K), np.int64), "top_probs": ((T, K), np.float32),
            **{f"hidden_{n}": ((L + 1, T), np.int64 if n == "argmax" else np.float32) for n in HIDDEN_STATS},
            **{f"attn_{n}": ((L, H, T), np.float32) for n in ATTENTION_STATS if n not in LATER_ATTENTION_STATS},
        }
        optional = {"residual": ((L + 1, T, D), np.float16), "residual_mask": ((T,), np.bool_),
                    "attention_rows": ((L, H, T, T), np.float16),
                    **{f"attn_{n}": ((L, H, T), np.float32) for n in LATER_ATTENTION_STATS}}
        if ("residual" in arrays) != ("residual_mask" in arrays):
            raise ValueError("residual and residual_mask must be stored together")
        for name, (shape, dtype) in {**expected, **optional}.items():
            a = arrays.get(name)
            if a is None:
                if name in expected:
                    raise ValueError(f"the array {name} is missing")
                continue
            if a.dtype != dtype or a.shape != shape:
                raise ValueError(f"the array {name} is {a.dtype} {a.shape}, expected {np.dtype(dtype)} {shape}")

        trace.token_ids = ids.tolist()
        trace.pieces = list(pieces)
        trace.text_parts = list(text_parts)
        trace.elapsed = [float(x) for x in elapsed]
        trace.top_pieces = [tuple(p) for p in top_pieces]
        trace.alternative_pieces = dict(alternative_pieces or {})
        trace.notices = list(notices)
        trace._echoes = []
        trace.finished = finished
        trace.mask_changes = list(mask_changes)
        trace.parent, trace.fork_position, trace.label = parent, fork_position, label
        trace.analyses = list(analyses)
        trace.capacity = T
        # The trace owns writable arrays, never views into a file's buffer.
        copy = (lambda a: a if a.flags.writeable else np.array(a)) if owned else np.array
        trace._logprob, trace._entropy, trace._rank = copy(arrays["logprob"]), copy(arrays["entropy"]), copy(arrays["rank"])
        trace._top_ids, trace._top_probs = copy(arrays["top_ids"]), copy(arrays["top_probs"])
        trace._hidden = {n: copy(arrays[f"hidden_{n}"]) for n in HIDDEN_STATS}
        trace.missing_attention = frozenset(n for n in ATTENTION_STATS if f"attn_{n}" not in arrays)
        trace._attention = {n: np.full((L, H, T), np.nan, np.float32) if n in trace.missing_attention
                            else copy(arrays[f"attn_{n}"]) for n in ATTENTION_STATS}
        if "residual" in arrays:
            trace._residual = copy(arrays["residual"])
            trace._residual_mask = copy(arrays["residual_mask"])
        if "attention_rows" in arrays:
            rows = copy(arrays["attention_rows"])
            trace._attention_rows = [StepStats(start=0, attention_rows=tuple(rows[l] for l in range(L)))]
        return trace
