"""Two runs side by side, position by position (whole-sequence positions, prompt included)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .trace import RunTrace


@dataclass(frozen=True)
class RunComparison:
    """`first_diff`: the first position whose token ids differ; when one run is a strict prefix of the
    other, the first position only the longer run has; None when the sequences are identical.

    All arrays are (length,), NaN where a run has no value (past its end, position 0):
    prob_*/entropy_*: the probability each run gave its own token, and its entropy there.
    prob_b_of_a: the probability run b gave run a's token, for positions up to and including
    first_diff: b's own probability where the tokens agree, at first_diff taken from b's stored top
    alternatives (NaN when a's token is not among them or b has no distribution there).
    same_model: same model source, dtype (and revision, when both know it): only then do the
    probabilities of the two runs come from one distribution.
    """

    first_diff: int | None
    length: int
    prob_a: np.ndarray
    prob_b: np.ndarray
    entropy_a: np.ndarray
    entropy_b: np.ndarray
    prob_b_of_a: np.ndarray
    same_model: bool


def _padded(values: np.ndarray, length: int) -> np.ndarray:
    out = np.full(length, np.nan, np.float64)
    out[: len(values)] = values
    return out


def compare_runs(a: RunTrace, b: RunTrace) -> RunComparison:
    ids_a, ids_b = np.asarray(a.token_ids), np.asarray(b.token_ids)
    n = min(len(ids_a), len(ids_b))
    length = max(len(ids_a), len(ids_b))
    differ = np.flatnonzero(ids_a[:n] != ids_b[:n])
    if differ.size:
        first_diff: int | None = int(differ[0])
    elif len(ids_a) != len(ids_b):
        first_diff = n
    else:
        first_diff = None

    prob_a = _padded(np.exp(a.logprob.astype(np.float64)), length)
    prob_b = _padded(np.exp(b.logprob.astype(np.float64)), length)
    prob_b_of_a = np.full(length, np.nan)
    agree = n if first_diff is None else first_diff
    prob_b_of_a[:agree] = prob_b[:agree]
    if first_diff is not None and first_diff < n:
        hit = np.flatnonzero(b.top_ids[first_diff] == ids_a[first_diff])
        if hit.size:
            prob_b_of_a[first_diff] = float(b.top_probs[first_diff, hit[0]])

    ma, mb = a.started.model, b.started.model
    same = ma.source == mb.source and ma.dtype == mb.dtype and (
        ma.revision is None or mb.revision is None or ma.revision == mb.revision)
    return RunComparison(
        first_diff=first_diff, length=length, prob_a=prob_a, prob_b=prob_b,
        entropy_a=_padded(a.entropy, length), entropy_b=_padded(b.entropy, length),
        prob_b_of_a=prob_b_of_a, same_model=same)
