"""Results of the engine's teacher-forced analyses: plain numpy in frozen dataclasses, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Divergence:
    """Two teacher-forced passes over the same T tokens (e.g. a run with and without an intervention).

    logprob_base/logprob_other: (T,) float32, log-probability of token t under each pass's
    distribution at t-1; kl: (T,) float32, KL(base || other) of those two next-token distributions.
    All three are NaN at t = 0, which nothing predicts.
    """

    logprob_base: np.ndarray
    logprob_other: np.ndarray
    kl: np.ndarray


@dataclass(frozen=True)
class HeadImportance:
    """How much each head matters to the generated tokens of one sequence.

    delta: (L, H) float32, sum over generated positions t >= n_prompt of
    logprob_with_head_scaled[t] - logprob_baseline[t] (negative: the head helped predict them);
    NaN for heads not computed because the job was stopped (then `completed` is False).
    baseline_logprob: the unscaled sum of those log-probabilities.
    """

    delta: np.ndarray
    baseline_logprob: float
    completed: bool
    scale: float = 0.0
    n_prompt: int = 0


@dataclass(frozen=True)
class LensTable:
    """The logit lens of every position of one sequence: each hidden-state row (embed, then the
    output of layers 0 … L-1) read through the model's own head, as engine/lens.py reads one.

    top_ids: (L+1, T, k) int64 and top_probs: (L+1, T, k) float32, the k most likely next tokens
    per row and position; target_logprob: (L+1, T) float32, the log-probability (natural log) of
    the token that actually came next (NaN at the last position, which has none); target_rank:
    (L+1, T) int64, its 1-based rank (0 at the last position). Row L is the model's own next-token
    distribution. pieces: each id in top_ids shown alone, so the table reads without a tokenizer.
    """

    top_ids: np.ndarray
    top_probs: np.ndarray
    target_logprob: np.ndarray
    target_rank: np.ndarray
    pieces: dict = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.top_ids.shape[0])

    @property
    def n_positions(self) -> int:
        return int(self.top_ids.shape[1])

    @property
    def top_k(self) -> int:
        return int(self.top_ids.shape[2])
