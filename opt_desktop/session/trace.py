"""A run as numpy arrays, grown from the engine's events. Qt-free; one thread at a time.

Positions 0..T-1 are the prompt tokens (the leading `</s>` included) then the generated tokens.
Per-layer arrays hold NaN for positions not (yet) fed to the model, which is always true of the
last generated token.
"""

from __future__ import annotations

import numpy as np

from ..engine.events import (
    ATTENTION_STATS,
    HIDDEN_STATS,
    Event,
    Finished,
    Notice,
    PromptScored,
    Started,
    StepStats,
    TokenGenerated,
)


class RunTrace:
    def __init__(self, started: Started):
        self.started = started
        info = started.model
        self.n_layers = info.n_layers
        self.n_heads = info.n_heads
        self.n_prompt = len(started.prompt_ids)
        cap = self.n_prompt + started.max_new_tokens
        self.capacity = cap
        k = int(started.inspect.get("top_alternatives", 10))
        L, H = self.n_layers, self.n_heads

        self.token_ids: list[int] = list(started.prompt_ids)
        self.pieces: list[str] = list(started.prompt_pieces)
        self.text_parts: list[str] = []  # generated text, one entry per generated token
        self.elapsed: list[float] = []  # per generated token
        self.notices: list[str] = list(started.notices)
        self.finished: Finished | None = None

        nan = np.nan
        self._logprob = np.full(cap, nan, np.float32)
        self._entropy = np.full(cap, nan, np.float32)
        self._rank = np.zeros(cap, np.int64)
        self._top_ids = np.zeros((cap, k), np.int64)
        self._top_probs = np.full((cap, k), nan, np.float32)
        self._hidden = {name: np.full((L + 1, cap), nan, np.float32) for name in HIDDEN_STATS}
        self._hidden["argmax"] = np.full((L + 1, cap), -1, np.int64)
        self._attention = {name: np.full((L, H, cap), nan, np.float32) for name in ATTENTION_STATS}
        self._residual: np.ndarray | None = None  # (L+1, cap, D) float16, allocated on first use
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
            self._put_stats(event.fed)
        elif isinstance(event, TokenGenerated):
            t = event.position
            if t >= self.capacity:
                raise ValueError(f"token at position {t} is past this run's capacity {self.capacity}")
            self.token_ids.append(event.token_id)
            self.pieces.append(event.piece)
            self.text_parts.append(event.text)
            self.elapsed.append(event.elapsed_s)
            self._logprob[t] = event.logprob
            self._entropy[t] = event.entropy
            self._rank[t] = event.rank
            k = min(len(event.top_ids), self._top_ids.shape[1])
            self._top_ids[t, :k] = event.top_ids[:k]
            self._top_probs[t, :k] = event.top_probs[:k]
            self._put_stats(event.fed)
        elif isinstance(event, Notice):
            self.notices.append(event.message)
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
                self._residual = np.zeros((L1, self.capacity, D), np.float16)
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

    @property
    def logprob(self) -> np.ndarray:
        return self._logprob[: self.length]

    @property
    def entropy(self) -> np.ndarray:
        return self._entropy[: self.length]

    @property
    def rank(self) -> np.ndarray:
        return self._rank[: self.length]

    @property
    def top_ids(self) -> np.ndarray:
        return self._top_ids[: self.length]

    @property
    def top_probs(self) -> np.ndarray:
        return self._top_probs[: self.length]

    def hidden(self, name: str) -> np.ndarray:
        """(L+1, T) statistic named in HIDDEN_STATS."""
        return self._hidden[name][:, : self.length]

    def attention(self, name: str) -> np.ndarray:
        """(L, H, T) statistic named in ATTENTION_STATS."""
        return self._attention[name][:, :, : self.length]

    def residual_rows(self, position: int) -> np.ndarray | None:
        """(L+1, D) float16 residual stream at `position`, or None when it was not kept or not fed."""
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
