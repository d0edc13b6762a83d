"""Results of the engine's teacher-forced analyses: plain numpy in frozen dataclasses, no torch."""

from __future__ import annotations

from dataclasses import dataclass

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
